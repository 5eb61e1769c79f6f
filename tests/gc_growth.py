"""How many objects the cyclic GC tracks after some work: a container per row or per write makes every full
collection longer as a run goes on (it walks them all, and every greenlet of the process waits)."""
import gc


def tracked_objects_added(work) -> int:
    """GC-tracked objects that ``work()`` leaves behind (a full collection before and after it)."""
    gc.collect()
    before = len(gc.get_objects())
    work()
    gc.collect()
    return len(gc.get_objects()) - before
