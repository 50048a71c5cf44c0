"""`metalctl deploy swarm` wall time on 1, 3 and 6 nodes (fresh lab each run), the 6/1 ratio,
the idempotent re-run time, and the peak RSS of the metalctl process during a deploy.

With --preload: labs made with `lab up --preload swarm --offline` (packages in the image,
no route out of the lab network).

Usage: python bench/bench_deploy.py [--runs 3] [--sizes 1,3,6] [--preload]
"""

from __future__ import annotations

import argparse
import json

from _common import fmt, median, private_home, run

# The slowest tasks of the last first deploy of each size ('metalctl runs show').
SLOWEST: dict[int, list[dict[str, object]]] = {}
ROLES: dict[int, list[dict[str, object]]] = {}


LAB_FLAGS: tuple[str, ...] = ()


def one(home, name: str, nodes: int) -> tuple[float, float, float, float]:  # type: ignore[no-untyped-def]
    managers = 3 if nodes >= 3 else 1
    run(
        home, "lab", "up", "--name", name, "--nodes", str(nodes), "--managers", str(managers),
        *LAB_FLAGS,
    )  # fmt: skip
    try:
        first = run(home, "deploy", "swarm", "-c", name, "-q", "-o", "json")
        shown = json.loads(
            run(
                home,
                "runs",
                "show",
                json.loads(first.stdout)["run_dir"].rsplit("/", 1)[1],
                "-c",
                name,
                "--top",
                "5",
                "-o",
                "json",
            ).stdout
        )
        SLOWEST[nodes] = shown["slowest_tasks"]
        ROLES[nodes] = shown["roles"]
        again = run(home, "deploy", "swarm", "-c", name, "-q")
    finally:
        run(home, "lab", "down", "--name", name)
    return first.seconds, again.seconds, first.peak_rss_mib, again.peak_rss_mib


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="1,3,6")
    ap.add_argument("--preload", action="store_true", help="lab up --preload swarm --offline")
    args = ap.parse_args()
    global LAB_FLAGS
    LAB_FLAGS = ("--preload", "swarm", "--offline") if args.preload else ()
    sizes = [int(s) for s in args.sizes.split(",")]
    home = private_home()
    results: dict[int, tuple[list[float], list[float], list[float]]] = {}
    for n in sizes:
        firsts, agains, rss = [], [], []
        for i in range(args.runs):
            f, a, r1, r2 = one(home, f"bench{n}x{i}", n)
            firsts.append(f)
            agains.append(a)
            rss.append(max(r1, r2))
            print(
                f"  {n} nodes run {i + 1}: deploy {f:.1f}s, re-run {a:.1f}s, "
                f"peak RSS {max(r1, r2):.0f} MiB",
                flush=True,
            )
        results[n] = (firsts, agains, rss)
    how = (
        "preloaded image, no route out"
        if args.preload
        else "packages installed by apt inside the nodes, through NAT"
    )
    print(f"\ndeploy swarm (fresh lab nodes; {how})")
    for n, (firsts, agains, rss) in results.items():
        print(
            f"  {n} node(s): deploy {fmt(firsts)}; idempotent re-run {fmt(agains)}; "
            f"metalctl peak RSS median {median(rss):.0f} MiB"
        )
        print(f"    re-run / first (medians): {median(agains) / median(firsts):.2f}")
    if 1 in results and 6 in results:
        ratio = median(results[6][0]) / median(results[1][0])
        print(f"  ratio 6/1 nodes (deploy medians): {ratio:.2f}")
    for n, tasks in SLOWEST.items():
        roles = ", ".join(f"{r['role']} {r['seconds']:.1f}s" for r in ROLES[n])
        print(f"\n{n} node(s), last first deploy: per role (longest host): {roles}")
        for t in tasks:
            print(
                f"  {t['seconds']:6.1f}s  {t['host']:<12} {t['role'] or '(play)':<12} {t['task']}"
            )


if __name__ == "__main__":
    main()
