"""The test merchant's per-path modes: several merchants' endpoints on one host and port."""

import aiohttp

from ..merchant import start_merchant


async def test_a_path_with_a_mode_of_its_own_is_answered_so() -> None:
    merchant = await start_merchant(mode="fail")
    merchant.modes["/b"] = "success"
    base = str(merchant.server.make_url(""))
    try:
        async with aiohttp.ClientSession() as http:
            answered = {}
            for path in ("a", "b"):
                async with http.post(f"{base}/{path}", data="{}") as resp:
                    answered[path] = resp.status
            async with http.post(f"{base}/_mode", json={"mode": "success", "path": "a"}) as resp:
                assert (await resp.json())["modes"] == {"/a": "success", "/b": "success"}
            async with http.post(f"{base}/a", data="{}") as resp:
                answered["a again"] = resp.status
            async with http.post(f"{base}/c", data="{}") as resp:
                answered["c"] = resp.status
    finally:
        await merchant.server.close()
    assert answered == {"a": 500, "b": 200, "a again": 200, "c": 500}
    assert [(r.path, r.ok) for r in merchant.received] == [
        ("/a", False), ("/b", True), ("/a", True), ("/c", False),
    ]  # fmt: skip
