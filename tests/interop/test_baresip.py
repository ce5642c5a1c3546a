"""Interop: baresip (Debian 1.0.0) as a caller over mutual TLS, through our chain.

baresip registers with our VSP proxy over TLS (its certificate from the VSP's test CA, in
one PEM with its key, `sip_certificate`; `sip_cafile` holds our CAs; the VSP requires the
client certificate) and dials 911 on its console (`cons` module, UDP: `/dial`, `/hangup`,
`/quit`). baresip sends no location, so the ESRP routes the call by its default route to the
default PSAP (NENA i3: a missing location never stops a call) and adds a default location.
Audio: `aubridge` as source and player (no sound card; `ausine` only does 48 kHz).

The VSP has Digest authentication on (issue 11): baresip's account carries `auth_pass`, the
REGISTER is challenged with 401 and baresip answers it. Debian's baresip 1.0.0 runs on libre
1.1.0, whose Digest knows MD5 only, and it gives up (ENOSYS, "Function not implemented") as
soon as *any* WWW-Authenticate offers another algorithm, even with an MD5 one beside it, in
either order. So RFC 8760's SHA-256 + MD5 pair locks it out, and this VSP offers MD5 only
(`auth_algorithms = ["MD5"]`): an operator with such UAs must do the same.

What baresip 1.0.0 (libre) cannot do, and how the test copes:
- `sips:` URIs: a `sips:` account fails to REGISTER with ENOSYS, and a `sips:` Record-Route
  in a `sip:` dialog ends the call at the 200 with ENOSYS. So the account is
  `sip:…;transport=tls` (every byte of the hop is still mutual TLS), and our proxies
  record-route `sip:…;transport=tls` for a dialog that is not `sips:` (F's `own_uri`).
- no host table: it resolves route host names by DNS, and nothing here knows the chain's
  FQDNs. So baresip talks to a VspProxy of its own ("vsp-tls", not in the host table, so it
  advertises its address), which forwards emergency calls to the chain's ESRP.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from pathlib import Path

import pytest

from ng911.elements.config import ListenerConfig, VspConfig
from ng911.elements.vsp import VspProxy
from ng911.pki.testpki import build_test_pki
from ng911.testbed.launcher import open_chain

pytestmark = pytest.mark.interop

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")
NEEDED = ("g711", "aubridge", "cons", "account", "menu")


def _missing() -> str | None:
    if BARESIP is None:
        return "baresip not installed (Debian package baresip-core; `make peers` installs it)"
    for m in NEEDED:
        if not (MODULES / f"{m}.so").exists():
            return f"baresip module {m}.so missing under {MODULES}"
    return None


REASON = _missing()
PASSWORD = "hunter2-baresip"

CONFIG = """poll_method		epoll
sip_listen		127.0.0.1:{sip_port}
sip_certificate		{pem}
sip_cafile		{ca}
call_local_timeout	20
call_max_calls		2
audio_player		aubridge,ng911
audio_source		aubridge,ng911
audio_alert		aubridge,ng911
module_path		{modules}
module			g711.so
module			aubridge.so
module			cons.so
module_app		account.so
module_app		menu.so
cons_listen		127.0.0.1:{cons_port}
"""

# The account's domain is the VSP's address (no DNS here knows vsp.example). With
# `outbound="sip:127.0.0.1:PORT;transport=tls"` and the domain vsp.example instead, baresip's
# REGISTER carries `Route: <outbound;lr>` and the VSP answers 403: it proxies a REGISTER
# whose Route names itself instead of registering it.
ACCOUNT = (
    "<sip:caller@127.0.0.1:{vsp_port};transport=tls>;auth_pass={password};regint=600;"
    "answermode=manual;audio_codecs=pcmu\n"
)


def _free(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cons(port: int, command: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(command.encode(), ("127.0.0.1", port))


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
async def test_baresip_calls_911_over_tls(tmp_path: Path) -> None:
    chain = await open_chain(hops=("udp", "udp", "udp", "udp"))
    proc: asyncio.subprocess.Process | None = None
    vsp: VspProxy | None = None
    try:
        # the TLS-facing VSP proxy: our VspProxy, advertising its address, not a name
        pki = build_test_pki(tmp_path / "pki")
        esrp = chain.esrp
        vsp = VspProxy(
            VspConfig(
                name="vsp-tls",
                fqdn="vsp-tls.vsp.example",  # not in the host table: Record-Route by address
                domain="vsp.example",
                listeners=(ListenerConfig("tls", "127.0.0.1", 0), ListenerConfig("udp")),
                hosts=chain.vsp.config.hosts,
                esrp=f"sip:{esrp.fqdn}:{esrp.local('udp').port}",
                auth=True,  # Digest at the registrar (issue 11): baresip must answer it
                users={"caller": PASSWORD},
                auth_algorithms=("MD5",),  # libre 1.1 cannot do SHA-256 (module docstring)
            ),
            log_keep=500,
            server_tls=pki.server_context("vsp-proxy", require_client_cert=True),
            client_tls=pki.client_context("vsp-proxy"),
        )
        await vsp.start()
        cert = pki.issue("baresip", ca="vsp", dns=("baresip.vsp.example",))
        pem = tmp_path / "baresip.pem"
        pem.write_text(Path(cert.chain_path).read_text() + Path(cert.key_path).read_text())
        ca = tmp_path / "cas.pem"
        ca.write_text("".join(Path(p).read_text() for p in pki.ca_files()))
        cfgdir = tmp_path / "baresip"
        cfgdir.mkdir()
        (cfgdir / "accounts").write_text(
            ACCOUNT.format(vsp_port=vsp.local("tls").port, password=PASSWORD)
        )
        (cfgdir / "contacts").write_text("")
        log = tmp_path / "baresip.log"
        # its ports are picked free here and bound by baresip later: in between another
        # socket can take one (they come from the ephemeral range), and baresip then stops
        # with "Address already in use"; fresh ports, at most three tries
        for _ in range(3):
            cons_port = _free(socket.SOCK_DGRAM)
            (cfgdir / "config").write_text(
                CONFIG.format(
                    sip_port=_free(socket.SOCK_STREAM),
                    pem=pem,
                    ca=ca,
                    modules=MODULES,
                    cons_port=cons_port,
                )
            )
            with log.open("wb") as out:
                assert BARESIP is not None
                proc = await asyncio.create_subprocess_exec(
                    BARESIP, "-f", str(cfgdir), "-t", "25", "-s",
                    stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
            for _ in range(20):  # its listeners are bound (or refused) within moments
                if "init failed" in log.read_text(errors="replace"):
                    break
                await asyncio.sleep(0.05)
            if "Address already in use" not in log.read_text(errors="replace"):
                break
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

        # registered with the VSP over TLS
        for _ in range(100):
            if any(r["what"] == "register" for r in vsp.log.records):
                break
            await asyncio.sleep(0.1)
        assert any(r["what"] == "register" for r in vsp.log.records), log.read_text()
        assert vsp.log.find("register_challenged")  # it did not get in without credentials

        # wait for baresip's own view of the registration, then dial on its console
        for _ in range(50):
            if "200 OK" in log.read_text(errors="replace"):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        _cons(cons_port, "/dial 911\n")
        psap = chain.psaps["psap-default"]
        for _ in range(100):
            if any(e.answered for e in psap._entries.values()) or psap.call_log:
                break
            await asyncio.sleep(0.1)
        assert any(e.answered for e in psap._entries.values()) or psap.call_log, log.read_text()[
            -3000:
        ]
        _cons(cons_port, "/hangup\n")
        for _ in range(50):
            if psap.call_log:
                break
            await asyncio.sleep(0.1)
        assert psap.call_log, log.read_text()[-3000:]
        entry = psap.call_log[-1]
        assert entry.outcome == "completed"
        assert entry.caller.startswith("sip:caller@127.0.0.1")
        # no other PSAP saw it
        assert not [s for s, p in chain.psaps.items() if s != "psap-default" and p.call_log]
    finally:
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(OSError):
                _cons(cons_port, "/quit\n")
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if vsp is not None:
            await vsp.close()
        await chain.close()
