"""The call chain's elements: caller UA, VSP proxy, ESRP, PSAP server, call taker."""
