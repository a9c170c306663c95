"""Every cell of the Pythagoras tutorial, run against pythagoras_p2p on the embedded default.

    python examples/tutorial.py

Each cell prints what the notebook shows under it. Run it twice: the second run answers every
call from the store in your PYTHAGORAS_HOME (default ~/.pythagoras) and takes a fraction of a
second. There is deliberately no ``if __name__ == "__main__":`` guard: worker processes never
re-import this script, just as with a notebook.
"""

import time

from pythagoras_p2p import *

started = time.perf_counter()


def cell(number, value):
    print(f"In [{number}]:  {value!r}")


# In [3]: the cloud. With connection=None it uses the swarm when this machine belongs to one,
# and otherwise the embedded default: the local store plus worker processes on this machine.
my_cloud = PCloud(requires=None, connection=None)
print(f"In [3]:  my_cloud = {my_cloud!r}")


# In [4]: two pure functions: deterministic, no side effects, keyword-only parameters.
@my_cloud.add_pure_function
def very_slow_function(*, important_parameter: int):
    """     >>>>>       THIS FUNCTION RUNS FOR ABOUT AN HOUR       <<<<<     """
    return important_parameter**2


@my_cloud.add_pure_function
def another_slow_function(*, best_ever_parameter: int):
    """     >>>>>       THIS FUNCTION RUNS FOR ABOUT AN HOUR       <<<<<     """
    return best_ever_parameter**3


# Cloud-based memoization
cell(5, very_slow_function(important_parameter=22))  # computed, then stored
cell(6, very_slow_function(important_parameter=22))  # read back from the store
cell(7, very_slow_function(important_parameter=99))

# Cloud-based execution
cell(8, very_slow_function(important_parameter=88))  # a new call runs here, in this process
cell(9, very_slow_function.sync_remote(important_parameter=12345))  # runs in a worker process
cell(10, very_slow_function.sync_remote(important_parameter=12345))  # answered from the store
cell(11, very_slow_function.sync_remote(important_parameter=55))

# The asynchronous form: a concurrent.futures.Future at once, its result when it is done.
future = very_slow_function.async_remote(important_parameter=56)
cell("11a", future.result())

# Cloud-based parallelization
results = []
for i in range(10):
    results.append(very_slow_function(important_parameter=i))
cell(12, results)

cell(13, [very_slow_function(important_parameter=i) for i in range(100, 110)])

cell(14, very_slow_function.sync_parallel(kw_args(important_parameter=i) for i in range(200, 210)))
cell(15, very_slow_function.sync_parallel(kw_args(important_parameter=i) for i in range(200, 210)))

cell("*", another_slow_function.sync_parallel(kw_args(best_ever_parameter=i) for i in range(5)))

# async_parallel: a future per call, in input order (stored calls are futures already done).
futures = very_slow_function.async_parallel(kw_args(important_parameter=i) for i in range(300, 305))
cell("15a", [f.result() for f in futures])

print(f"done in {time.perf_counter() - started:.2f} s; results are stored in {my_cloud.home}")
