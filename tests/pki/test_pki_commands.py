from ng911.cli import main


def test_pki_init_issue_show(tmp_path, capsys):
    assert main(["pki", "init", str(tmp_path / "ca"), "--name", "ESInet CA"]) == 0
    rc = main(
        [
            "pki",
            "issue",
            "esrp",
            "--ca",
            str(tmp_path / "ca"),
            "--domain",
            "esinet.example",
            "--dns",
            "esrp.esinet.example",
            "--ip",
            "127.0.0.1",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 0
    assert (tmp_path / "out" / "esrp-chain.pem").exists()
    capsys.readouterr()
    assert main(["pki", "show", str(tmp_path / "out" / "esrp.pem")]) == 0
    out = capsys.readouterr().out
    assert "esinet.example" in out and "CN=esrp" in out


def test_pki_rsa_and_errors(tmp_path, capsys):
    assert main(["pki", "init", str(tmp_path / "ca"), "--key-type", "rsa"]) == 0
    assert main(["pki", "init", str(tmp_path / "ca")]) == 2  # errors: one line on stderr, 2
    assert "already holds" in capsys.readouterr().err
    assert main(["pki", "issue", "x", "--ca", str(tmp_path / "none"), "--dns", "a"]) == 2
    assert "holds no CA" in capsys.readouterr().err
    assert main(["pki", "issue", "x", "--ca", str(tmp_path / "ca")]) == 2
    assert main(["pki", "show", str(tmp_path / "missing.pem")]) == 2
    assert main(["pki"]) == 2
