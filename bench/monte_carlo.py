"""Chapter 4's Monte-Carlo cell: its draws as they run, with one thread per mixture fit, and in two processes
(one run, the same draws; prints the times and whether the errors are equal).

    .venv/bin/python bench/monte_carlo.py
"""

import time

from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from poisoncure import signal

EPS = 500 / 5500  # the chapter's poisoned share of the target class
D = 3072
#: (n, signal norm, seed) of 20 of the chapter's draws: both of its sweeps, seeds as the chapter sets them
DRAWS = ([(n, 6.0, 1000 * t + n) for n in (250, 1000, 4000) for t in range(4)]
         + [(2000, v, 1000 * t + int(10 * v)) for v in (3.0, 6.0) for t in range(4)])


def draw(n: int, norm: float, seed: int) -> float:
    return signal.filtering_error(n, D, EPS, norm, seed=seed)


def draw_one_thread(n: int, norm: float, seed: int) -> float:
    with threadpool_limits(limits=1):
        return draw(n, norm, seed)


def timed(run):
    t = time.perf_counter()
    out = run()
    return out, time.perf_counter() - t


def main() -> None:
    a, ta = timed(lambda: [draw(*d) for d in DRAWS])
    b, tb = timed(lambda: [draw_one_thread(*d) for d in DRAWS])
    c, tc = timed(lambda: Parallel(n_jobs=2)(delayed(draw_one_thread)(*d) for d in DRAWS))
    print(f"{len(DRAWS)} draws: as they run {ta:.1f} s; one thread per fit {tb:.1f} s ({ta / tb:.2f}x); "
          f"two processes {tc:.1f} s ({ta / tc:.2f}x); errors equal: {a == b}, {a == c}")


if __name__ == "__main__":
    main()
