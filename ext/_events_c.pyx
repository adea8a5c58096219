# cython: language_level=3
# cython: freethreading_compatible=True
# Free-threading: the module keeps no mutable global state (only constants set at import), and each iterator
# belongs to one ``async for`` in one task.
"""The compiled twin of ``sonicsse._events_py``: ``async for`` over a connection's event batches.

An async generator costs about 60 ns per item on CPython 3.11: every ``__anext__`` makes an awaitable, and
the item comes back inside a ``StopIteration``. ``EventIterator`` is its own awaitable and fills the
``am_send`` slot, so an event that is already decoded reaches ``async for`` with no object made and no
exception raised. When its batch is used up it asks the connection's ``_step()`` for the next one,
which in the steady state of a stream gives the next batch, or a future to wait on, without any coroutine;
only otherwise does it drive the ``_next_batch()`` coroutine, passing the futures that coroutine waits on
up to the task. It holds the connection itself rather than bound methods of it: with 10,000 streams, each
object a stream keeps is one more for the cyclic garbage collector to visit.
"""

from cpython.object cimport PyObject, PyTypeObject
from cpython.list cimport PyList_CheckExact
from cpython.ref cimport Py_INCREF, Py_XDECREF

import asyncio

cdef extern from "Python.h":
    # PYGEN_RETURN (0): *presult is the return value; PYGEN_NEXT (1): a value yielded; PYGEN_ERROR (-1).
    int PyIter_Send(object iter, object arg, PyObject** presult) except -1
    PyObject* PyIter_Next(PyObject* iter)  # NULL at the end, or on an error
    PyObject* PyErr_Occurred()
    PyObject* PyList_GET_ITEM(object, Py_ssize_t)

cdef extern from *:
    """
    static void sonicsse_set_am_send(PyTypeObject *type, void *send) {
        type->tp_as_async->am_send = (sendfunc)send;
        PyType_Modified(type);
    }
    """
    void sonicsse_set_am_send(PyTypeObject* type, void* send)

cdef enum:
    PYGEN_RETURN = 0
    PYGEN_NEXT = 1


cdef class EventIterator:
    """``EventIterator(source, token, rest)``: yield the events of the lists ``source._step()`` and
    ``await source._next_batch()`` give, until ``_next_batch()`` gives None; ``source._leave(token)``
    runs once when the iteration ends, however it ends.

    ``_step()`` is tried first each time a batch is used up: it gives the next batch, or a future to wait
    on before trying it again, or None to have ``_next_batch()`` run instead.

    ``rest`` is a one-item list holding an iterator over the current batch's events not yet yielded: the
    connection shares it with every iterator it makes, so one that is abandoned half-way through a batch
    (``await anext(aiter(conn))``) leaves the rest to the next.
    """

    cdef object _source
    cdef object _token
    cdef list _rest
    cdef object _coro  # the next_batch() coroutine while it runs
    cdef object _waiting  # the future step() gave, while it is awaited
    cdef bint _finished

    def __cinit__(self, *args, **kwargs):
        self._finished = True  # until __init__ accepted its arguments: __del__ has nothing to end

    def __init__(self, source, token, list rest not None):
        if len(rest) != 1:
            raise ValueError("rest must be a list holding one iterator")
        self._source = source
        self._token = token
        self._rest = rest
        self._coro = None
        self._waiting = None
        self._finished = False

    def __aiter__(self):
        return self

    def __anext__(self):
        return self

    def __await__(self):
        return self

    def __next__(self):
        return self.send(None)

    def send(self, value):
        """Resume the pending ``_next_batch()`` with ``value`` (the awaitable protocol, without ``am_send``)."""
        cdef PyObject* res = NULL
        cdef int status = _iter_send(self, value, &res)
        cdef object out = <object>res
        Py_XDECREF(res)
        if status == PYGEN_NEXT:
            return out
        raise StopIteration(out)

    def throw(self, typ, val=None, tb=None):
        """Raise an exception (a task's cancellation) into the pending ``next_batch()``; while a future
        from ``step()`` is awaited, it ends the iteration, as it would end ``next_batch()``."""
        cdef object coro = self._coro
        if coro is None:
            if val is None:
                val = typ() if isinstance(typ, type) else typ
            if self._waiting is not None:
                self._waiting = None
                self._finish()
            raise val
        try:
            return coro.throw(typ, val, tb) if val is not None or tb is not None else coro.throw(typ)
        except StopIteration as stop:
            self._coro = None
            return self._first(stop.value)
        except BaseException:
            self._coro = None
            self._finish()
            raise

    def close(self):
        """Close the pending ``next_batch()``: the awaiting coroutine is being closed."""
        coro = self._coro
        self._coro = None
        self._waiting = None
        if coro is not None:
            coro.close()
        self._finish()

    async def aclose(self):
        """End the iteration now (as ``aclose()`` ends an async generator)."""
        self.close()

    cdef object _first(self, object batch):
        """Take a new batch; raise ``StopIteration`` with its first event (or ``StopAsyncIteration``)."""
        if batch is None:
            self._finish()
            raise StopAsyncIteration
        it = iter(batch)
        self._rest[0] = it
        for event in it:
            raise StopIteration(event)
        return self.send(None)  # an empty batch: await the next one

    cdef int _finish(self) except -1:
        if self._finished:
            return 0
        self._finished = True
        self._source._leave(self._token)
        return 0

    def __del__(self):
        # Dropped without being exhausted (after a ``break``): end it from the event loop, as asyncio
        # finalizes an abandoned async generator, so an iteration that starts meanwhile goes on.
        if self._finished:
            return
        self._finished = True
        try:
            asyncio.get_running_loop().call_soon(self._source._leave, self._token)
        except Exception:  # no running loop (or the interpreter is shutting down)
            self._source._leave(self._token)


cdef int _iter_send(object obj, object arg, PyObject** result) except -1:
    """The ``am_send`` slot: the next event (PYGEN_RETURN), or a future to wait on (PYGEN_NEXT)."""
    cdef EventIterator self = <EventIterator>obj
    cdef PyObject* res = NULL
    cdef int status
    cdef object value
    while True:
        if self._coro is None:
            if self._finished:
                raise StopAsyncIteration
            res = PyIter_Next(PyList_GET_ITEM(self._rest, 0))
            if res != NULL:
                result[0] = res
                return PYGEN_RETURN
            if PyErr_Occurred() != NULL:
                return -1
            self._waiting = None
            try:
                value = self._source._step()
            except BaseException:
                self._finish()
                raise
            if value is not None:
                if PyList_CheckExact(value):
                    self._rest[0] = iter(value)
                    continue
                # A future: hand it to the task as ``await future`` would, and try step() again when
                # the task resumes this iterator.
                value._asyncio_future_blocking = True
                self._waiting = value
                Py_INCREF(value)
                result[0] = <PyObject*>value
                return PYGEN_NEXT
            self._coro = self._source._next_batch()
            arg = None
        try:
            status = PyIter_Send(self._coro, arg, &res)
        except BaseException:
            self._coro = None
            self._finish()
            raise
        if status == PYGEN_NEXT:
            result[0] = res
            return PYGEN_NEXT
        self._coro = None
        value = <object>res
        Py_XDECREF(res)
        if value is None:
            self._finish()
            raise StopAsyncIteration
        self._rest[0] = iter(value)


sonicsse_set_am_send(<PyTypeObject*>EventIterator, <void*>_iter_send)
