"""`lost_cache` in an ESRP's table: answers kept for their `expires` by default (RFC 5222
§5.4), or LoST asked for every call (`lost_cache = false`), e.g. to load the LoST path."""

from ng911.elements.config import EsrpConfig, load_toml
from ng911.node.build import lost_client


def test_an_esrp_caches_lost_answers_unless_its_table_says_not(tmp_path):
    assert EsrpConfig().lost_cache is True
    assert lost_client(EsrpConfig()).use_cache is True
    off = tmp_path / "esrp.toml"
    off.write_text('[esrp]\nname = "esrp"\nlost_cache = false\n')
    cfg = load_toml(off, "esrp", EsrpConfig)
    assert cfg.lost_cache is False and lost_client(cfg).use_cache is False
    # the testbed's observed clients: cached only when asked, whatever the table says
    assert lost_client(EsrpConfig(), observers=[]).use_cache is False
    assert lost_client(EsrpConfig(), observers=[], use_cache=True).use_cache is True
