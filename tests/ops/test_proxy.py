from __future__ import annotations

import httpx
import pytest

from icd.ops.nginx_proxy import NginxProxy, ProxySpec, TlsFiles, render_conf
from icd.ops.tls import make_self_signed
from tests.ops.helpers import infer_body


def test_render_conf_tls_and_upstreams(tmp_path):
    spec = ProxySpec(18443, ("127.0.0.1:1", "127.0.0.1:2"), TlsFiles(tmp_path / "c.pem", tmp_path / "k.pem"))
    text = render_conf(spec, tmp_path)
    assert "listen 127.0.0.1:18443 ssl;" in text and text.count("server 127.0.0.1:") == 2
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text


@pytest.mark.e2e
def test_real_https_inference_through_nginx_to_embedded_triton(tmp_path, free_port, triton_small_server):
    cert, key = make_self_signed(tmp_path / "server.crt", tmp_path / "server.key")
    upstream = f"127.0.0.1:{triton_small_server.http_port}"
    with NginxProxy(tmp_path / "nginx") as proxy:
        proxy.start(ProxySpec(free_port(), (upstream,), TlsFiles(cert, key)))
        assert proxy.url.startswith("https://")
        with httpx.Client(verify=str(cert), trust_env=False, timeout=10) as client:
            resp = client.post(f"{proxy.url}/v2/models/echo_delay/infer", json=infer_body(2, 8))
        assert resp.status_code == 200, resp.text
        assert resp.json()["outputs"][0]["shape"] == [2, 2]
        with pytest.raises(httpx.ConnectError):  # an unknown certificate is not trusted
            httpx.get(f"{proxy.url}/v2/health/ready", verify=True, trust_env=False, timeout=5)
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port is not served
            httpx.get(proxy.url.replace("https://", "http://") + "/v2/health/ready", trust_env=False,
                      timeout=5).raise_for_status()
        pid = proxy.pid
    assert proxy.pid is None and pid is not None


@pytest.mark.e2e
def test_n_tritons_behind_nginx_under_load(tmp_path, free_port, triton_repo_small, triton_server):
    from icd.load.runner import run_load
    from icd.load.settings import LoadSettings
    from icd.load.target import Target

    servers = [triton_server(triton_repo_small) for _ in range(2)]
    upstreams = tuple(f"127.0.0.1:{s.http_port}" for s in servers)
    with NginxProxy(tmp_path / "nginx") as proxy:
        proxy.start(ProxySpec(free_port(), upstreams))
        report = run_load(LoadSettings(duration_s=2.0, warmup_s=0.0, concurrency=8, inputs="random", workers=0,
                                       input_shape=16), Target(proxy.url, ("echo_delay",)))
    summary = report.model_summary("echo_delay")
    assert summary["errors"]["total"] == 0 and summary["requests_ok"] > 50
    served = []
    for server in servers:
        stats = httpx.get(f"{server.http_url}/v2/models/echo_delay/stats", trust_env=False).json()
        served.append(int(stats["model_stats"][0]["inference_stats"]["success"]["count"]))
    assert all(count > 10 for count in served), served  # both servers took a real share of the load
