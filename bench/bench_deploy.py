"""`metalctl deploy swarm` wall time on 1, 3 and 6 nodes (fresh lab each run), the 6/1 ratio,
the idempotent re-run time, and the peak RSS of the metalctl process during a deploy.

--mode says how the nodes get the workload's packages:
  nat         apt inside each node, from Debian's archive through Docker's NAT (default)
  preload     `lab up --preload swarm --offline`: in the image, no route out
  cache-warm  `lab up --package-cache --offline` after `metalctl cache fill`: apt through
              the admin host's package cache, which has every package already
  cache-cold  the same with the host-wide cache emptied before each lab: the first node's
              apt makes the cache fetch from the archive, the others read what it fetched

Usage: python bench/bench_deploy.py [--runs 3] [--sizes 1,3,6] [--mode nat]
"""

from __future__ import annotations

import argparse
import json
import shutil

from _common import fmt, median, private_home, run

# The slowest tasks of the last first deploy of each size ('metalctl runs show').
SLOWEST: dict[int, list[dict[str, object]]] = {}
ROLES: dict[int, list[dict[str, object]]] = {}


LAB_FLAGS: tuple[str, ...] = ()
MODES = {
    "nat": ((), "packages installed by apt inside the nodes, through NAT"),
    "preload": (("--preload", "swarm", "--offline"), "preloaded image, no route out"),
    "cache-warm": (
        ("--package-cache", "--offline"),
        "apt through the package cache, filled ahead; no route out",
    ),
    "cache-cold": (
        ("--package-cache", "--offline"),
        "apt through the package cache, emptied before each lab; no route out",
    ),
}
MODE = "nat"


def _empty_cache() -> None:
    from metalctl.provisioners.lab_cache import packages_dir

    shutil.rmtree(packages_dir(), ignore_errors=True)


def one(home, name: str, nodes: int) -> tuple[float, float, float, float]:  # type: ignore[no-untyped-def]
    managers = 3 if nodes >= 3 else 1
    if MODE == "cache-cold":
        _empty_cache()
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
    ap.add_argument("--mode", choices=sorted(MODES), default="nat")
    args = ap.parse_args()
    global LAB_FLAGS, MODE
    MODE = args.mode
    LAB_FLAGS, how = MODES[MODE]
    sizes = [int(s) for s in args.sizes.split(",")]
    home = private_home()
    if MODE == "cache-warm":
        filled = run(home, "cache", "fill", "--workload", "swarm")
        print(f"  cache fill: {filled.seconds:.1f}s", flush=True)
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
