"""`metalctl lab up` for 4 nodes (image already built): median of 3."""

from __future__ import annotations

from _common import fmt, private_home, run


def main(runs: int = 3) -> list[float]:
    home = private_home()
    run(home, "lab", "up", "--name", "benchup", "--nodes", "1", "--managers", "1")  # image warm
    run(home, "lab", "down", "--name", "benchup")
    times = []
    for i in range(runs):
        name = f"benchup{i}"
        times.append(run(home, "lab", "up", "--name", name, "--nodes", "4").seconds)
        run(home, "lab", "down", "--name", name)
    print(f"lab up, 4 nodes: {fmt(times)}")
    return times


if __name__ == "__main__":
    main()
