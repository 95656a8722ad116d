/* Native hot path of Lumin's call tracer (lumin_nb/collect/calls.py drives it).
 *
 * The METH_FASTCALL functions below are registered directly as sys.monitoring callbacks
 * (as CPython's _lsprof does). PY_START is a global event: the first time a code object is
 * seen it is classified once by a Python decider, and the answer is cached on the code object
 * (PyUnstable_Code_SetExtra) together with a generation number, so a new watch() pattern
 * invalidates every answer at once. Unrecorded code gets DISABLE. Recorded code gets local
 * PY_RETURN/PY_YIELD/PY_RESUME events (set by the decider); RAISE, EXCEPTION_HANDLED,
 * PY_UNWIND and PY_THROW cannot be local, so their callbacks return at once unless the current
 * frame is a recorded call.
 *
 * Invariants:
 * - each finished call writes ONE fixed-size Record into a preallocated ring buffer; when the
 *   buffer is full the record is dropped and counted, never blocking the program;
 * - every callback runs with the GIL held (no free-threaded build), so the ring buffer, the
 *   suspended-generator table and the counters need no other lock;
 * - per-thread call stacks are keyed by the interpreter frame, so a return matches its own
 *   start; entries whose frame left without an event (stale) are discarded when an outer
 *   frame returns;
 * - a callback never returns NULL: errors of the Python slow path are cleared and counted;
 * - take_columns() turns the records into column buffers with the GIL released (the range it
 *   copies is not reused until it returns), so the program keeps running while it drains.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <x86intrin.h>
#define LUMIN_HAVE_TSC 1
#endif

#ifdef Py_GIL_DISABLED
#error "the native tracer needs the GIL; the free-threaded build uses the Python tracer"
#endif

#if PY_VERSION_HEX < 0x030C0000
#error "sys.monitoring needs Python 3.12 or newer"
#endif

/* ---- records (the layout RECORD_DTYPE in calls.py reads) ---------------------------- */

typedef struct {
    int64_t ts_ns;       /* start, epoch ns */
    int64_t duration_ns; /* wall time from first start to final return/unwind */
    uint64_t code;       /* PyCodeObject* (kept alive by the decider) */
    uint64_t span_id;
    uint64_t parent_span_id; /* 0: a root */
    uint64_t trace_hi;
    uint64_t trace_lo;
    uint64_t tid; /* threading.get_ident() */
    int64_t active_ns;   /* generators and coroutines: time actually running */
    uint32_t suspensions;
    uint32_t flags;
} Record;

#define F_UNWOUND 1u
#define F_GENERATOR 2u
#define F_UNSAMPLED 4u /* entry flag only: a call of a tree not sampled */

/* ---- per-call entries ---------------------------------------------------------------- */

typedef struct {
    void *frame;
    PyObject *code; /* borrowed: identity only */
    int64_t start_mono;
    int64_t resumed_mono;
    int64_t active_ns;
    uint64_t span_id;
    uint64_t parent_span_id;
    uint64_t trace_hi;
    uint64_t trace_lo;
    uint32_t suspensions;
    uint32_t flags;
} Entry;

typedef struct {
    Entry *stack;
    size_t depth;
    size_t cap;
    uint64_t session;
    uint64_t tid;
    int ignored;
    int in_handler;
    int filtered; /* thread_filter() asked (lazily: at the first recorded call) */
} ThreadState;

/* ---- global state (guarded by the GIL) ----------------------------------------------- */

static Py_ssize_t extra_index = -1;
static pthread_key_t tls_key;
#if defined(__GNUC__) || defined(__clang__)
/* initial-exec: one TLS load instead of a __tls_get_addr call on every event */
static _Thread_local ThreadState *tls __attribute__((tls_model("initial-exec"))) = NULL;
#else
static _Thread_local ThreadState *tls = NULL;
#endif

static int active = 0;
static uint64_t session = 0;
static uintptr_t generation = 1;
static PyObject *decide = NULL;       /* decide(code) -> int flags */
static PyObject *on_exception = NULL; /* on_exception(code, exc, phase, span, hi, lo) */
static PyObject *thread_filter = NULL; /* thread_filter() -> bool: ignore this thread */
static PyObject *disable = NULL;      /* sys.monitoring.DISABLE */

static Record *ring = NULL;
static uint64_t ring_cap = 0;
static uint64_t ring_head = 0; /* next write */
static uint64_t ring_tail = 0; /* next read */
static uint64_t ring_w = 0;    /* ring_head % ring_cap, kept without a division */
static int taking = 0;         /* take_columns() is copying without the GIL */

static uint64_t n_starts = 0; /* PY_START events seen (DISABLE makes them stop) */
static uint64_t n_recorded = 0;
static uint64_t n_dropped = 0;
static uint64_t n_suspended_dropped = 0;
static uint64_t n_handler_errors = 0;

static uint64_t span_base = 0;
static uint64_t span_counter = 0;
static uint64_t trace_base = 0;
static uint64_t trace_counter = 0;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t sample_threshold = UINT64_MAX; /* sample when rand < threshold */
static int sample_all = 1;
static int64_t epoch_offset = 0;

static uint64_t block_span = 0; /* the innermost active trace() block, 0 when none */
static uint64_t block_hi = 0;
static uint64_t block_lo = 0;

/* suspended generators/coroutines: open addressing keyed by frame pointer */
typedef struct {
    void *key; /* NULL empty, TOMB deleted */
    Entry entry;
} Slot;
#define TOMB ((void *)1)
static Slot *susp = NULL;
static size_t susp_cap = 0;
static size_t susp_used = 0; /* live + tombstones */
static size_t susp_live = 0;
#define SUSP_MAX_LIVE (1u << 20)

/* ---- helpers ------------------------------------------------------------------------- */

static inline int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The clock of every timestamp: CLOCK_MONOTONIC, read either directly or, when the kernel's
 * own clocksource is an invariant TSC, extrapolated from rdtsc (10 ns instead of 23 here) with
 * a rate calibrated against CLOCK_MONOTONIC at install and refined at every take_columns().
 * A refinement keeps the extrapolated time continuous (only the rate changes), so durations
 * never jump or go negative. */
static int use_tsc = 0;
#ifdef LUMIN_HAVE_TSC
static uint64_t tsc_anchor = 0;   /* rdtsc at the anchor */
static int64_t mono_anchor = 0;   /* extrapolated CLOCK_MONOTONIC ns at the anchor */
static uint64_t tsc_cal = 0;      /* the install calibration point: the long baseline */
static int64_t mono_cal = 0;
static uint64_t ns_per_tick32 = 0; /* ns per tick, fixed point << 32 */

static inline int64_t
tsc_ns(uint64_t tsc)
{
    return mono_anchor +
           (int64_t)(((unsigned __int128)(tsc - tsc_anchor) * ns_per_tick32) >> 32);
}
#endif

static inline int64_t
now_ns(void)
{
#ifdef LUMIN_HAVE_TSC
    if (use_tsc) {
        return tsc_ns(__rdtsc());
    }
#endif
    return mono_ns();
}

static void
clock_start(int want_tsc)
{
    use_tsc = 0;
#ifdef LUMIN_HAVE_TSC
    if (!want_tsc) {
        return;
    }
    tsc_cal = __rdtsc();
    mono_cal = mono_ns();
    int64_t m;
    uint64_t t;
    do { /* 1 ms of calibration at start() */
        t = __rdtsc();
        m = mono_ns();
    } while (m - mono_cal < 1000000);
    if (t <= tsc_cal) {
        return;
    }
    ns_per_tick32 = (uint64_t)((((unsigned __int128)(m - mono_cal)) << 32) / (t - tsc_cal));
    tsc_anchor = t;
    mono_anchor = m;
    use_tsc = ns_per_tick32 != 0;
#endif
}

static void
clock_refine(void)
{
#ifdef LUMIN_HAVE_TSC
    if (!use_tsc) {
        return;
    }
    uint64_t t = __rdtsc();
    int64_t m = mono_ns();
    if (t <= tsc_cal || m <= mono_cal) {
        return;
    }
    int64_t here = tsc_ns(t);
    uint64_t rate = (uint64_t)((((unsigned __int128)(m - mono_cal)) << 32) / (t - tsc_cal));
    if (rate == 0) {
        return;
    }
    tsc_anchor = t;
    mono_anchor = here; /* continuous: only the rate changes */
    ns_per_tick32 = rate;
#endif
}

static inline uint64_t
splitmix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static inline uint64_t
next_rand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static inline uint64_t
new_span_id(void)
{
    uint64_t id = span_base + (++span_counter);
    return id ? id : span_base + (++span_counter);
}

static inline void *
current_frame(void)
{
    PyThreadState *ts = PyThreadState_GET();
#if PY_VERSION_HEX >= 0x030D0000
    return (void *)ts->current_frame;
#else
    return (void *)ts->cframe->current_frame;
#endif
}

static void
tls_free(void *p)
{
    ThreadState *t = (ThreadState *)p;
    if (t) {
        free(t->stack);
        free(t);
    }
}

/* Return this thread's state, resetting it when a new session started. NULL: ignore. */
static ThreadState *
thread_state(void)
{
    ThreadState *t = tls;
    if (t == NULL) {
        t = (ThreadState *)calloc(1, sizeof(ThreadState));
        if (t == NULL) {
            return NULL;
        }
        t->tid = (uint64_t)PyThread_get_thread_ident();
        tls = t;
        pthread_setspecific(tls_key, t);
    }
    if (t->session != session) {
        t->session = session;
        t->depth = 0;
        t->ignored = 0;
        t->in_handler = 0;
        t->filtered = 0;
    }
    return t;
}

static Entry *
push(ThreadState *t)
{
    if (t->depth == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        Entry *s = (Entry *)realloc(t->stack, cap * sizeof(Entry));
        if (s == NULL) {
            return NULL;
        }
        t->stack = s;
        t->cap = cap;
    }
    return &t->stack[t->depth++];
}

/* Index of the entry of `frame` on the stack, or -1. */
static inline Py_ssize_t
find(ThreadState *t, void *frame)
{
    for (Py_ssize_t i = (Py_ssize_t)t->depth - 1; i >= 0; i--) {
        if (t->stack[i].frame == frame) {
            return i;
        }
    }
    return -1;
}

static void
emit(ThreadState *t, Entry *e, int64_t now, uint32_t extra_flags)
{
    if (e->flags & F_UNSAMPLED) {
        return;
    }
    if (ring_head - ring_tail >= ring_cap) {
        n_dropped++;
        return;
    }
    Record *r = &ring[ring_w];
    if (++ring_w == ring_cap) {
        ring_w = 0;
    }
    r->ts_ns = e->start_mono + epoch_offset;
    r->duration_ns = now - e->start_mono;
    r->code = (uint64_t)(uintptr_t)e->code;
    r->span_id = e->span_id;
    r->parent_span_id = e->parent_span_id;
    r->trace_hi = e->trace_hi;
    r->trace_lo = e->trace_lo;
    r->tid = t->tid;
    r->active_ns = e->active_ns;
    r->suspensions = e->suspensions;
    r->flags = (e->flags & F_GENERATOR) | extra_flags;
    ring_head++;
    n_recorded++;
}

/* suspended table */

static inline size_t
susp_hash(void *key)
{
    return (size_t)(splitmix((uint64_t)(uintptr_t)key));
}

static int
susp_grow(void)
{
    size_t cap = susp_cap ? susp_cap * 2 : 1024;
    if (susp_live * 4 < susp_cap) { /* mostly tombstones: rehash at the same size */
        cap = susp_cap;
    }
    Slot *fresh = (Slot *)calloc(cap, sizeof(Slot));
    if (fresh == NULL) {
        return -1;
    }
    for (size_t i = 0; i < susp_cap; i++) {
        void *k = susp[i].key;
        if (k != NULL && k != TOMB) {
            size_t j = susp_hash(k) & (cap - 1);
            while (fresh[j].key != NULL) {
                j = (j + 1) & (cap - 1);
            }
            fresh[j] = susp[i];
        }
    }
    free(susp);
    susp = fresh;
    susp_cap = cap;
    susp_used = susp_live;
    return 0;
}

static void
susp_put(Entry *e)
{
    if ((susp_used + 1) * 2 > susp_cap) {
        if (susp_live >= SUSP_MAX_LIVE || susp_grow() < 0) {
            n_suspended_dropped++;
            return;
        }
    }
    size_t mask = susp_cap - 1;
    size_t j = susp_hash(e->frame) & mask;
    Slot *tomb = NULL;
    while (susp[j].key != NULL) {
        if (susp[j].key == e->frame) { /* a stale entry of a dead generator: replace it */
            susp[j].entry = *e;
            return;
        }
        if (susp[j].key == TOMB && tomb == NULL) {
            tomb = &susp[j];
        }
        j = (j + 1) & mask;
    }
    Slot *s = tomb ? tomb : &susp[j];
    if (!tomb) {
        susp_used++;
    }
    s->key = e->frame;
    s->entry = *e;
    susp_live++;
}

static int
susp_take(void *frame, Entry *out)
{
    if (susp_live == 0) {
        return 0;
    }
    size_t mask = susp_cap - 1;
    size_t j = susp_hash(frame) & mask;
    while (susp[j].key != NULL) {
        if (susp[j].key == frame) {
            *out = susp[j].entry;
            susp[j].key = TOMB;
            susp_live--;
            return 1;
        }
        j = (j + 1) & mask;
    }
    return 0;
}

/* ---- the callbacks ------------------------------------------------------------------- */

#define RETURN_NONE_FAST Py_RETURN_NONE

/* PY_START(code, offset) */
static PyObject *
cb_py_start(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!active || nargs < 1) {
        RETURN_NONE_FAST;
    }
    n_starts++;
    PyObject *code = args[0];
    ThreadState *t = thread_state();
    if (t == NULL || t->ignored) {
        RETURN_NONE_FAST;
    }
    void *extra = NULL;
    if (PyUnstable_Code_GetExtra(code, extra_index, &extra) < 0) {
        PyErr_Clear();
        RETURN_NONE_FAST;
    }
    uintptr_t cached = (uintptr_t)extra;
    long flags;
    if (cached != 0 && (cached >> 2) == generation) {
        flags = (long)(cached & 3);
    }
    else {
        if (t->in_handler || decide == NULL) {
            RETURN_NONE_FAST; /* Lumin's own slow path: decide later, outside it */
        }
        t->in_handler = 1;
        PyObject *r = PyObject_CallOneArg(decide, code);
        t->in_handler = 0;
        if (r == NULL) {
            PyErr_Clear();
            n_handler_errors++;
            flags = 0;
        }
        else {
            flags = PyLong_AsLong(r) & 3;
            Py_DECREF(r);
            if (PyErr_Occurred()) {
                PyErr_Clear();
                flags = 0;
            }
        }
        if (!active) {
            RETURN_NONE_FAST;
        }
        if (PyUnstable_Code_SetExtra(code, extra_index, (void *)((generation << 2) | flags)) <
            0) {
            PyErr_Clear();
        }
    }
    if (flags == 0) {
        return Py_NewRef(disable);
    }
    if (t->in_handler) {
        RETURN_NONE_FAST;
    }
    if (!t->filtered) {
        /* asked here, not at the thread's first event: by now threading knows the thread */
        t->filtered = 1;
        if (thread_filter != NULL) {
            t->in_handler = 1;
            PyObject *r = PyObject_CallNoArgs(thread_filter);
            t->in_handler = 0;
            if (r == NULL) {
                PyErr_Clear();
                n_handler_errors++;
            }
            else {
                t->ignored = PyObject_IsTrue(r) == 1;
                Py_DECREF(r);
            }
        }
        if (t->ignored) {
            RETURN_NONE_FAST;
        }
    }
    Entry *e = push(t);
    if (e == NULL) {
        RETURN_NONE_FAST;
    }
    e->frame = current_frame();
    e->code = code;
    e->active_ns = 0;
    e->suspensions = 0;
    e->flags = (((PyCodeObject *)code)->co_flags &
                (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR))
                   ? F_GENERATOR
                   : 0;
    e->span_id = new_span_id();
    if (t->depth > 1) {
        Entry *parent = e - 1;
        e->parent_span_id = parent->span_id;
        e->trace_hi = parent->trace_hi;
        e->trace_lo = parent->trace_lo;
        e->flags |= parent->flags & F_UNSAMPLED;
    }
    else {
        if (block_span) {
            e->parent_span_id = block_span;
            e->trace_hi = block_hi;
            e->trace_lo = block_lo;
        }
        else {
            e->parent_span_id = 0;
            e->trace_hi = trace_base;
            e->trace_lo = splitmix(trace_base ^ (++trace_counter));
        }
        if (!sample_all && next_rand() >= sample_threshold) {
            e->flags |= F_UNSAMPLED;
        }
    }
    e->start_mono = now_ns();
    e->resumed_mono = e->start_mono;
    RETURN_NONE_FAST;
}

/* Pop the entry of the current frame and write its record. */
static inline void
finish(uint32_t extra_flags)
{
    ThreadState *t = tls;
    if (t == NULL || t->depth == 0 || t->session != session) {
        return;
    }
    void *frame = current_frame();
    Py_ssize_t i = (Py_ssize_t)t->depth - 1;
    if (t->stack[i].frame != frame) {
        i = find(t, frame);
        if (i < 0) {
            return;
        }
    }
    int64_t now = now_ns();
    Entry *e = &t->stack[i];
    if (e->flags & F_GENERATOR) {
        e->active_ns += now - e->resumed_mono;
    }
    emit(t, e, now, extra_flags);
    t->depth = (size_t)i; /* drops stale entries above it too */
}

/* PY_RETURN(code, offset, retval) */
static PyObject *
cb_py_return(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (active) {
        finish(0);
    }
    RETURN_NONE_FAST;
}

/* PY_UNWIND(code, offset, exc) */
static PyObject *
cb_py_unwind(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (active) {
        finish(F_UNWOUND);
    }
    RETURN_NONE_FAST;
}

/* PY_YIELD(code, offset, retval): park the entry until PY_RESUME/PY_THROW. */
static PyObject *
cb_py_yield(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    ThreadState *t = tls;
    if (!active || t == NULL || t->depth == 0 || t->session != session) {
        RETURN_NONE_FAST;
    }
    void *frame = current_frame();
    Py_ssize_t i = (Py_ssize_t)t->depth - 1;
    if (t->stack[i].frame != frame) {
        i = find(t, frame);
        if (i < 0) {
            RETURN_NONE_FAST;
        }
    }
    Entry *e = &t->stack[i];
    e->active_ns += now_ns() - e->resumed_mono;
    e->suspensions++;
    susp_put(e);
    t->depth = (size_t)i;
    RETURN_NONE_FAST;
}

/* PY_RESUME(code, offset) and PY_THROW(code, offset, exc) */
static PyObject *
cb_py_resume(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!active || susp_live == 0) {
        RETURN_NONE_FAST;
    }
    ThreadState *t = thread_state();
    if (t == NULL || t->ignored) {
        RETURN_NONE_FAST;
    }
    Entry saved;
    if (!susp_take(current_frame(), &saved)) {
        RETURN_NONE_FAST;
    }
    Entry *e = push(t);
    if (e == NULL) {
        RETURN_NONE_FAST;
    }
    *e = saved;
    e->resumed_mono = now_ns();
    RETURN_NONE_FAST;
}

/* RAISE / EXCEPTION_HANDLED: the Python handler, for recorded calls only. */
static PyObject *
exception_event(PyObject *const *args, Py_ssize_t nargs, int phase)
{
    ThreadState *t = tls;
    if (!active || nargs < 3 || t == NULL || t->depth == 0 || t->session != session ||
        t->in_handler || t->ignored || on_exception == NULL) {
        RETURN_NONE_FAST;
    }
    Entry *e = &t->stack[t->depth - 1];
    if (e->frame != current_frame()) {
        RETURN_NONE_FAST;
    }
    PyObject *span = PyLong_FromUnsignedLongLong(e->span_id);
    PyObject *hi = PyLong_FromUnsignedLongLong(e->trace_hi);
    PyObject *lo = PyLong_FromUnsignedLongLong(e->trace_lo);
    PyObject *ph = PyLong_FromLong(phase);
    PyObject *r = NULL;
    if (span && hi && lo && ph) {
        PyObject *call_args[6] = {args[0], args[2], ph, span, hi, lo};
        t->in_handler = 1;
        r = PyObject_Vectorcall(on_exception, call_args, 6, NULL);
        t->in_handler = 0;
    }
    Py_XDECREF(span);
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(ph);
    if (r == NULL) {
        PyErr_Clear();
        n_handler_errors++;
    }
    else {
        Py_DECREF(r);
    }
    RETURN_NONE_FAST;
}

static PyObject *
cb_raise(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return exception_event(args, nargs, 0);
}

static PyObject *
cb_exception_handled(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return exception_event(args, nargs, 1);
}

/* A callback that does nothing: the floor of sys.monitoring's own cost, for benchmarks. */
static PyObject *
cb_noop(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    RETURN_NONE_FAST;
}

static void set_rate(double rate);

/* ---- control ------------------------------------------------------------------------- */

static void
release_state(void)
{
    Py_CLEAR(decide);
    Py_CLEAR(on_exception);
    Py_CLEAR(thread_filter);
    free(susp);
    susp = NULL;
    susp_cap = susp_used = susp_live = 0;
}

static PyObject *
ct_install(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"decide", "on_exception", "thread_filter", "disable", "capacity",
                             "sample_rate", "seed", "tsc", NULL};
    PyObject *dec, *exc, *filt, *dis;
    unsigned long long capacity, seed;
    double rate;
    int want_tsc = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOKdK|p", kwlist, &dec, &exc, &filt, &dis,
                                     &capacity, &rate, &seed, &want_tsc)) {
        return NULL;
    }
    if (taking) {
        PyErr_SetString(PyExc_RuntimeError, "a drain is copying the buffer; try again");
        return NULL;
    }
    if (capacity == 0) {
        PyErr_SetString(PyExc_ValueError, "capacity must be positive");
        return NULL;
    }
    Record *buf = (Record *)malloc((size_t)capacity * sizeof(Record));
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    release_state();
    free(ring);
    ring = buf;
    ring_cap = capacity;
    ring_head = ring_tail = ring_w = 0;
    n_starts = n_recorded = n_dropped = n_suspended_dropped = n_handler_errors = 0;
    decide = Py_NewRef(dec);
    on_exception = Py_NewRef(exc);
    thread_filter = filt == Py_None ? NULL : Py_NewRef(filt);
    Py_XSETREF(disable, Py_NewRef(dis));
    set_rate(rate);
    span_base = splitmix(seed);
    span_counter = 0;
    trace_base = splitmix(seed ^ 0xA5A5A5A5A5A5A5A5ull);
    trace_counter = 0;
    rng_state = splitmix(seed ^ 0x5A5A5A5A5A5A5A5Aull) | 1;
    clock_start(want_tsc);
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    int64_t mono = now_ns();
    epoch_offset = (int64_t)rt.tv_sec * 1000000000LL + rt.tv_nsec - mono;
    block_span = block_hi = block_lo = 0;
    session++;
    generation++;
    active = 1;
    Py_RETURN_NONE;
}

/* Stop recording; records in the buffer stay readable by take_columns() until install(). */
static PyObject *
ct_uninstall(PyObject *self, PyObject *unused)
{
    active = 0;
    session++;
    block_span = 0;
    release_state();
    Py_RETURN_NONE;
}

static PyObject *
ct_set_generation(PyObject *self, PyObject *arg)
{
    unsigned long long g = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) {
        return NULL;
    }
    generation = (uintptr_t)g;
    Py_RETURN_NONE;
}

static void
set_rate(double rate)
{
    sample_all = rate >= 1.0;
    sample_threshold = rate <= 0.0 ? 0 : (uint64_t)(rate * 18446744073709551615.0);
}

static PyObject *
ct_set_sample_rate(PyObject *self, PyObject *arg)
{
    double rate = PyFloat_AsDouble(arg);
    if (rate == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    set_rate(rate);
    Py_RETURN_NONE;
}

static PyObject *
ct_set_block(PyObject *self, PyObject *args)
{
    unsigned long long s, hi, lo;
    if (!PyArg_ParseTuple(args, "KKK", &s, &hi, &lo)) {
        return NULL;
    }
    block_span = s;
    block_hi = hi;
    block_lo = lo;
    Py_RETURN_NONE;
}

static inline uint64_t
be64(uint64_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_bswap64(x);
#else
    uint64_t r = 0;
    for (int i = 0; i < 8; i++) {
        r = (r << 8) | ((x >> (8 * i)) & 0xFF);
    }
    return r;
#endif
}

/* Split records [from, from + n) of the ring into column buffers (no Python calls: the
 * caller has released the GIL; the writers never touch this range until ring_tail moves). */
static void
fill_columns(uint64_t from, uint64_t n, char **cols, uint64_t *null_count, uint64_t *flagged)
{
    int64_t *ts = (int64_t *)cols[0];
    int64_t *dur = (int64_t *)cols[1];
    uint64_t *code = (uint64_t *)cols[2];
    uint64_t *span = (uint64_t *)cols[3];
    uint64_t *parent = (uint64_t *)cols[4];
    uint8_t *valid = (uint8_t *)cols[5];
    uint64_t *trace = (uint64_t *)cols[6];
    int64_t *tid = (int64_t *)cols[7];
    uint64_t *eid = (uint64_t *)cols[8];
    uint32_t *flags = (uint32_t *)cols[9];
    int64_t *act = (int64_t *)cols[10];
    uint32_t *susp_n = (uint32_t *)cols[11];
    uint64_t nulls = 0;
    uint64_t with_flags = 0;
    memset(valid, 0, (size_t)((n + 7) / 8));
    uint64_t k = from % ring_cap;
    for (uint64_t i = 0; i < n; i++) {
        const Record *r = &ring[k];
        if (++k == ring_cap) {
            k = 0;
        }
        ts[i] = r->ts_ns;
        dur[i] = r->duration_ns;
        code[i] = r->code;
        span[i] = be64(r->span_id);
        parent[i] = be64(r->parent_span_id);
        if (r->parent_span_id) {
            valid[i >> 3] |= (uint8_t)(1u << (i & 7));
        }
        else {
            nulls++;
        }
        trace[2 * i] = be64(r->trace_hi);
        trace[2 * i + 1] = be64(r->trace_lo);
        tid[i] = (int64_t)r->tid;
        /* UUIDv7: 48-bit ms, version 7, 12 bits of sub-ms, variant 10, then 62 bits of the
         * span id (unique in the process, random base across processes). */
        uint64_t t = r->ts_ns > 0 ? (uint64_t)r->ts_ns : 0;
        uint64_t ms = t / 1000000u;
        uint64_t frac = ((t % 1000000u) * 4096u) / 1000000u;
        eid[2 * i] = be64((ms << 16) | 0x7000u | (frac & 0x0FFFu));
        eid[2 * i + 1] = be64((r->span_id & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull);
        flags[i] = r->flags;
        with_flags += r->flags != 0;
        act[i] = r->active_ns;
        susp_n[i] = r->suspensions;
    }
    *null_count = nulls;
    *flagged = with_flags;
}

/* Return the records written since the last call as columns, or None when there are none:
 * (n, ts, duration_ns, code, span_id, parent_span_id, parent_valid, parent_nulls, trace_id,
 *  tid, event_id, flags, active_ns, suspensions, rows_with_flags); ids are big-endian. The copy runs
 * with the GIL released so the traced program keeps running. */
static PyObject *
ct_take_columns(PyObject *self, PyObject *unused)
{
    if (active && !taking) {
        clock_refine();
    }
    if (ring == NULL || ring_head == ring_tail || taking) {
        Py_RETURN_NONE;
    }
    uint64_t from = ring_tail;
    uint64_t n = ring_head - ring_tail;
    static const size_t width[12] = {8, 8, 8, 8, 8, 0, 16, 8, 16, 4, 8, 4};
    PyObject *bufs[12] = {NULL};
    char *cols[12];
    for (int c = 0; c < 12; c++) {
        size_t size = c == 5 ? (size_t)((n + 7) / 8) : (size_t)n * width[c];
        bufs[c] = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)size);
        if (bufs[c] == NULL) {
            for (int j = 0; j < c; j++) {
                Py_DECREF(bufs[j]);
            }
            return NULL;
        }
        cols[c] = PyByteArray_AS_STRING(bufs[c]);
    }
    uint64_t nulls = 0, flagged = 0;
    taking = 1;
    Py_BEGIN_ALLOW_THREADS
    fill_columns(from, n, cols, &nulls, &flagged);
    Py_END_ALLOW_THREADS
    taking = 0;
    ring_tail = from + n;
    PyObject *out = Py_BuildValue("(KNNNNNNKNNNNNNK)", (unsigned long long)n, bufs[0], bufs[1],
                                  bufs[2], bufs[3], bufs[4], bufs[5], (unsigned long long)nulls,
                                  bufs[6], bufs[7], bufs[8], bufs[9], bufs[10], bufs[11],
                                  (unsigned long long)flagged);
    return out;
}

/* Block (GIL released) until the buffer holds `fraction` of its capacity or `timeout_s`
 * passed; return True in the first case. The drain thread waits here so it drains early when
 * calls come fast, instead of letting the buffer overflow. */
static PyObject *
ct_wait_fill(PyObject *self, PyObject *args)
{
    double fraction, timeout_s;
    if (!PyArg_ParseTuple(args, "dd", &fraction, &timeout_s)) {
        return NULL;
    }
    if (ring == NULL || !active) {
        Py_RETURN_FALSE;
    }
    uint64_t want = (uint64_t)(fraction * (double)ring_cap);
    if (want == 0) {
        want = 1;
    }
    int64_t deadline = mono_ns() + (int64_t)(timeout_s * 1e9);
    int ready = 0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        /* racy reads of two counters only the GIL holder writes: a heuristic is enough */
        uint64_t used = __atomic_load_n(&ring_head, __ATOMIC_RELAXED) -
                        __atomic_load_n(&ring_tail, __ATOMIC_RELAXED);
        if (used >= want) {
            ready = 1;
            break;
        }
        int64_t left = deadline - mono_ns();
        if (left <= 0) {
            break;
        }
        struct timespec nap = {0, left < 2000000 ? (long)left : 2000000};
        nanosleep(&nap, NULL);
    }
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(ready);
}

static PyObject *
ct_counts(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("{sisKsKsKsKsKsn}", "tsc_clock", use_tsc, "starts", (unsigned long long)n_starts, "recorded", (unsigned long long)n_recorded, "dropped",
                         (unsigned long long)n_dropped, "suspended_dropped",
                         (unsigned long long)n_suspended_dropped, "handler_errors",
                         (unsigned long long)n_handler_errors, "suspended",
                         (Py_ssize_t)susp_live);
}

static PyObject *
ct_ignore_thread(PyObject *self, PyObject *unused)
{
    ThreadState *t = thread_state();
    if (t != NULL) {
        t->ignored = 1;
        t->filtered = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *
ct_new_span_id(PyObject *self, PyObject *unused)
{
    return PyLong_FromUnsignedLongLong(new_span_id());
}

static PyMethodDef ctracer_methods[] = {
    {"py_start", (PyCFunction)(void (*)(void))cb_py_start, METH_FASTCALL, "PY_START callback."},
    {"py_return", (PyCFunction)(void (*)(void))cb_py_return, METH_FASTCALL,
     "PY_RETURN callback."},
    {"py_unwind", (PyCFunction)(void (*)(void))cb_py_unwind, METH_FASTCALL,
     "PY_UNWIND callback."},
    {"py_yield", (PyCFunction)(void (*)(void))cb_py_yield, METH_FASTCALL, "PY_YIELD callback."},
    {"py_resume", (PyCFunction)(void (*)(void))cb_py_resume, METH_FASTCALL,
     "PY_RESUME and PY_THROW callback."},
    {"raise_", (PyCFunction)(void (*)(void))cb_raise, METH_FASTCALL, "RAISE callback."},
    {"exception_handled", (PyCFunction)(void (*)(void))cb_exception_handled, METH_FASTCALL,
     "EXCEPTION_HANDLED callback."},
    {"noop", (PyCFunction)(void (*)(void))cb_noop, METH_FASTCALL,
     "A callback that does nothing (benchmark floor)."},
    {"install", (PyCFunction)(void (*)(void))ct_install, METH_VARARGS | METH_KEYWORDS,
     "Allocate the ring buffer and start a recording session."},
    {"uninstall", ct_uninstall, METH_NOARGS, "End the session; take_columns() still works."},
    {"set_generation", ct_set_generation, METH_O, "Invalidate every cached decision."},
    {"set_sample_rate", ct_set_sample_rate, METH_O, "Fraction of call trees kept, from now."},
    {"set_block", ct_set_block, METH_VARARGS, "Set the active trace() block (0 for none)."},
    {"take_columns", ct_take_columns, METH_NOARGS,
     "Records since the last call, as column buffers (GIL released while copying)."},
    {"counts", ct_counts, METH_NOARGS, "Counters of the session."},
    {"wait_fill", ct_wait_fill, METH_VARARGS,
     "Wait until the buffer is that full or the timeout passed (GIL released)."},
    {"ignore_thread", ct_ignore_thread, METH_NOARGS, "Never trace the calling thread."},
    {"new_span_id", ct_new_span_id, METH_NOARGS, "A fresh span id of this process."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ctracer_module = {
    PyModuleDef_HEAD_INIT, "_ctracer", "Native hot path of Lumin's call tracer.", -1,
    ctracer_methods,
};

PyMODINIT_FUNC
PyInit__ctracer(void)
{
    if (extra_index < 0) {
        extra_index = PyUnstable_Eval_RequestCodeExtraIndex(NULL);
        if (extra_index < 0) {
            PyErr_SetString(PyExc_RuntimeError, "no free code extra index for Lumin's tracer");
            return NULL;
        }
        if (pthread_key_create(&tls_key, tls_free) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "pthread_key_create failed");
            return NULL;
        }
    }
    PyObject *m = PyModule_Create(&ctracer_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "RECORD_SIZE", (long)sizeof(Record)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
