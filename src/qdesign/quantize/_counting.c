/* The integer parts of the L2-optimal step search (step_search.py), compiled.
 *
 * Optional: setup.py builds it where a C compiler is found, and step_search.py
 * falls back to NumPy without it. Every function returns exactly what its
 * NumPy counterpart in step_search.py returns (counts are integers; the
 * prefix sums add in NumPy's cumsum order, one element after the other), so
 * the steps never depend on whether it was built; tests/test_counting.py
 * checks both paths against each other. The one reduction done here, the
 * Lloyd polish's sum of 2^(b-1) - 1 prefix sums, reproduces NumPy's
 * pairwise summation order, which step_search checks against the installed
 * NumPy at import (the polish runs compiled only where they agree).
 *
 * Build flags matter for the prefix sums: -ffp-contract=off keeps
 * `s2 += x * x` a rounded product and a rounded sum, as NumPy computes it,
 * instead of one fused multiply-add.
 *
 * Magnitudes are float32 or float64, sorted ascending, C-contiguous; queries
 * are float64. "Count below v" is the number of magnitudes m with m < v in
 * NumPy's order, where NaN sorts last: np.searchsorted(a, v, side="left").
 * The GIL is released inside every loop, so layers searched in threads run
 * in parallel.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

/* NumPy's ordering: x before v, NaN after everything */
#define LT(x, v) ((x) < (v) || ((v) != (v) && (x) == (x)))

static int
get_typed(PyObject *obj, Py_buffer *view, int writable, char kind, Py_ssize_t min_items, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '=' || *f == '<' || *f == '@')
        f++;
    int ok = view->itemsize == 8 &&
             (kind == 'd' ? strcmp(f, "d") == 0 : (strcmp(f, "l") == 0 || strcmp(f, "q") == 0 || strcmp(f, "n") == 0));
    if (!ok || view->len / 8 < min_items) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous %s buffer of at least %zd items", what,
                     kind == 'd' ? "float64" : "int64", min_items);
        return -1;
    }
    return 0;
}

/* A set of buffers held by one call, released together on every way out
 * (each function below takes its arguments through hold()). */
typedef struct {
    Py_buffer b[8];
    int n;
} Held;

static void
release_all(Held *h)
{
    while (h->n > 0)
        PyBuffer_Release(&h->b[--h->n]);
}

/* the buffer of obj, typed as get_typed checks it; NULL (with the error set
 * and everything held so far released) if it is not */
static void *
hold(Held *h, PyObject *obj, int writable, char kind, Py_ssize_t min_items, const char *what)
{
    if (get_typed(obj, &h->b[h->n], writable, kind, min_items, what) < 0) {
        release_all(h);
        return NULL;
    }
    return h->b[h->n++].buf;
}

/* items of the buffer held last */
static Py_ssize_t
items_of_last(const Held *h)
{
    return h->b[h->n - 1].len / 8;
}

/* Sorted magnitudes: the data of a held float32 or float64 buffer. */
typedef struct {
    const void *buf;
    int is_f32; /* else float64 */
    Py_ssize_t n;
} Magnitudes;

/* the magnitudes buffer obj, held in h (hold's contract) */
static int
hold_magnitudes(Held *h, PyObject *obj, Magnitudes *m)
{
    Py_buffer *view = &h->b[h->n];
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        release_all(h);
        return -1;
    }
    h->n++;
    const char *f = view->format ? view->format : "B";
    if (*f == '=' || *f == '<' || *f == '@')
        f++;
    if (strcmp(f, "f") == 0 && view->itemsize == 4)
        m->is_f32 = 1;
    else if (strcmp(f, "d") == 0 && view->itemsize == 8)
        m->is_f32 = 0;
    else {
        release_all(h);
        PyErr_SetString(PyExc_TypeError, "magnitudes must be a contiguous float32 or float64 buffer");
        return -1;
    }
    m->buf = view->buf;
    m->n = view->len / view->itemsize;
    return 0;
}

#define AT(m, i) ((m)->is_f32 ? (double)((const float *)(m)->buf)[i] : ((const double *)(m)->buf)[i])

/* prefix_sums(a, out): out is float64 of 2 * (n + 1) items, (p1, p2) pairs:
 * out[2 i] = sum of a[:i], out[2 i + 1] = sum of a[:i] ** 2 (each element
 * widened to float64 first), summed left to right as np.cumsum does. */
static PyObject *
prefix_sums(PyObject *self, PyObject *args)
{
    PyObject *a_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OO", &a_obj, &out_obj))
        return NULL;
    Magnitudes m;
    Held h = {.n = 0};
    if (hold_magnitudes(&h, a_obj, &m) < 0)
        return NULL;
    double *p = hold(&h, out_obj, 1, 'd', 2 * (m.n + 1), "out");
    if (!p)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    double s1 = 0.0, s2 = 0.0;
    p[0] = 0.0;
    p[1] = 0.0;
    if (m.is_f32) {
        const float *a = (const float *)m.buf;
        for (Py_ssize_t i = 0; i < m.n; i++) {
            double x = (double)a[i];
            s1 = s1 + x;
            s2 = s2 + x * x;
            p[2 * i + 2] = s1;
            p[2 * i + 3] = s2;
        }
    }
    else {
        const double *a = (const double *)m.buf;
        for (Py_ssize_t i = 0; i < m.n; i++) {
            double x = a[i];
            s1 = s1 + x;
            s2 = s2 + x * x;
            p[2 * i + 2] = s1;
            p[2 * i + 3] = s2;
        }
    }
    Py_END_ALLOW_THREADS
    release_all(&h);
    Py_RETURN_NONE;
}

/* The bin of a value, as step_search._SortedMagnitudes._bin_of computes it:
 * floor(clip(v * scale, 0, n_bins)) in float64. v must not be NaN. */
static inline Py_ssize_t
bin_of(double v, double scale, Py_ssize_t n_bins)
{
    double b = v * scale;
    if (b < 0.0)
        b = 0.0;
    if (b > (double)n_bins)
        b = (double)n_bins;
    return (Py_ssize_t)b;
}

/* count_table(a, scale, n_bins, cum) -> max occupancy: cum (int64, n_bins + 2
 * items) = 0 followed by the cumulative counts of magnitudes per bin, i.e.
 * cum[b] = number of magnitudes in bins below b. */
static PyObject *
count_table(PyObject *self, PyObject *args)
{
    PyObject *a_obj, *cum_obj;
    double scale;
    Py_ssize_t n_bins;
    if (!PyArg_ParseTuple(args, "OdnO", &a_obj, &scale, &n_bins, &cum_obj))
        return NULL;
    if (n_bins < 1 || !(scale > 0.0) || !isfinite(scale)) {
        PyErr_SetString(PyExc_ValueError, "count_table needs n_bins >= 1 and a finite scale > 0");
        return NULL;
    }
    Magnitudes m;
    Held h = {.n = 0};
    if (hold_magnitudes(&h, a_obj, &m) < 0)
        return NULL;
    Py_ssize_t *c = hold(&h, cum_obj, 1, 'l', n_bins + 2, "cum");
    if (!c)
        return NULL;
    Py_ssize_t max_occ = 0;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    /* a histogram, c[b + 1] = magnitudes in bin b, then its running sum: no
     * branch on the data (magnitudes need not even be sorted) */
    memset(c, 0, (size_t)(n_bins + 2) * sizeof(Py_ssize_t));
    if (m.is_f32) {
        const float *a = (const float *)m.buf;
        for (Py_ssize_t i = 0; i < m.n && !bad; i++) {
            double v = (double)a[i];
            bad = v != v;
            c[(bad ? 0 : bin_of(v, scale, n_bins)) + 1]++;
        }
    }
    else {
        const double *a = (const double *)m.buf;
        for (Py_ssize_t i = 0; i < m.n && !bad; i++) {
            double v = a[i];
            bad = v != v;
            c[(bad ? 0 : bin_of(v, scale, n_bins)) + 1]++;
        }
    }
    for (Py_ssize_t b = 1; b <= n_bins + 1; b++)
        c[b] += c[b - 1];
    if (!bad)
        for (Py_ssize_t b = 0; b <= n_bins; b++)
            if (c[b + 1] - c[b] > max_occ)
                max_occ = c[b + 1] - c[b];
    Py_END_ALLOW_THREADS
    release_all(&h);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "count_table: magnitudes contain NaN");
        return NULL;
    }
    return PyLong_FromSsize_t(max_occ);
}

/* first index in [lo, hi) whose magnitude is not below v, else hi */
static inline Py_ssize_t
lower_bound(const Magnitudes *m, Py_ssize_t lo, Py_ssize_t hi, double v)
{
    while (lo < hi) {
        Py_ssize_t mid = lo + ((hi - lo) >> 1);
        if (LT(AT(m, mid), v))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The count below v, in the bracket of v's bin when there is a count table
 * (cum from count_table with this scale and n_bins), else over all of a. */
typedef struct {
    const Magnitudes *m;
    const Py_ssize_t *cum; /* NULL: no table */
    double scale;
    Py_ssize_t n_bins;
} Counter;

static inline Py_ssize_t
count_one(const Counter *ct, double v)
{
    if (ct->cum != NULL && v == v) {
        Py_ssize_t b = bin_of(v, ct->scale, ct->n_bins);
        return lower_bound(ct->m, ct->cum[b], ct->cum[b + 1], v);
    }
    return lower_bound(ct->m, 0, ct->m->n, v);
}

/* The count table arguments (cum, scale, n_bins) of count_below and polish
 * as a Counter over m, cum held in h (None: no table). 0, or -1 with the
 * error set and h released. */
static int
hold_counter(Held *h, const Magnitudes *m, PyObject *cum_obj, double scale, Py_ssize_t n_bins, Counter *ct)
{
    *ct = (Counter){m, NULL, scale, n_bins};
    if (cum_obj == Py_None)
        return 0;
    if (n_bins < 1 || !(scale > 0.0) || !isfinite(scale)) {
        release_all(h);
        PyErr_SetString(PyExc_ValueError, "a count table needs n_bins >= 1 and a finite scale > 0");
        return -1;
    }
    ct->cum = hold(h, cum_obj, 0, 'l', n_bins + 2, "cum");
    return ct->cum ? 0 : -1;
}

/* count_below(a, queries, out, cum, scale, n_bins): out[i] = number of
 * magnitudes below queries[i]. With a count table (cum not None, from
 * count_table with the same scale and n_bins), each search runs inside the
 * bracket [cum[b], cum[b + 1]] of its query's bin; else over all of a. */
static PyObject *
count_below(PyObject *self, PyObject *args)
{
    PyObject *a_obj, *q_obj, *out_obj, *cum_obj;
    double scale;
    Py_ssize_t n_bins;
    if (!PyArg_ParseTuple(args, "OOOOdn", &a_obj, &q_obj, &out_obj, &cum_obj, &scale, &n_bins))
        return NULL;
    Magnitudes m;
    Held h = {.n = 0};
    Counter ct;
    if (hold_magnitudes(&h, a_obj, &m) < 0)
        return NULL;
    const double *v = hold(&h, q_obj, 0, 'd', 0, "queries");
    Py_ssize_t nq = v ? items_of_last(&h) : 0;
    Py_ssize_t *o = v ? hold(&h, out_obj, 1, 'l', nq, "out") : NULL;
    if (!o || hold_counter(&h, &m, cum_obj, scale, n_bins, &ct) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nq; i++)
        o[i] = count_one(&ct, v[i]);
    Py_END_ALLOW_THREADS
    release_all(&h);
    Py_RETURN_NONE;
}

/* The prefix sums' elementwise differences, for the lower bounds. Elementwise
 * float64 arithmetic rounds the same in C as in NumPy, operation by
 * operation (the reductions stay in NumPy, whose summation order is its own).
 * `pair` is the interleaved (p1, p2) buffer of prefix_sums. */
static int
check_index(const Py_ssize_t *idx, Py_ssize_t n, Py_ssize_t limit)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= limit)
            return -1;
    return 0;
}

/* The interleaved prefix sums and two index arrays of equal length into
 * them (pair_diffs and range_sq), held in h. 0, or -1 (error set, h
 * released) on a bad buffer; check_ranges checks the indices. */
typedef struct {
    const double *p;
    const Py_ssize_t *lo, *hi;
    Py_ssize_t n, limit;
} Ranges;

static int
hold_ranges(Held *h, PyObject *pair_obj, PyObject *lo_obj, PyObject *hi_obj, const char *lo_name,
            const char *hi_name, Ranges *r)
{
    r->p = hold(h, pair_obj, 0, 'd', 2, "pair");
    r->limit = r->p ? items_of_last(h) / 2 : 0;
    r->lo = r->p ? hold(h, lo_obj, 0, 'l', 0, lo_name) : NULL;
    r->n = r->lo ? items_of_last(h) : 0;
    r->hi = r->lo ? hold(h, hi_obj, 0, 'l', r->n, hi_name) : NULL;
    return r->hi ? 0 : -1;
}

/* every index within the prefix sums (call without the GIL) */
static int
check_ranges(const Ranges *r)
{
    return check_index(r->lo, r->n, r->limit) || check_index(r->hi, r->n, r->limit);
}

/* pair_diffs(pair, start, stop, d1, d2): d1 = p1[stop] - p1[start],
 * d2 = p2[stop] - p2[start], elementwise. */
static PyObject *
pair_diffs(PyObject *self, PyObject *args)
{
    PyObject *pair_obj, *start_obj, *stop_obj, *d1_obj, *d2_obj;
    if (!PyArg_ParseTuple(args, "OOOOO", &pair_obj, &start_obj, &stop_obj, &d1_obj, &d2_obj))
        return NULL;
    Held h = {.n = 0};
    Ranges r;
    if (hold_ranges(&h, pair_obj, start_obj, stop_obj, "start", "stop", &r) < 0)
        return NULL;
    double *o1 = hold(&h, d1_obj, 1, 'd', r.n, "d1");
    double *o2 = o1 ? hold(&h, d2_obj, 1, 'd', r.n, "d2") : NULL;
    if (!o2)
        return NULL;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    bad = check_ranges(&r);
    if (!bad)
        for (Py_ssize_t i = 0; i < r.n; i++) {
            o1[i] = r.p[2 * r.hi[i]] - r.p[2 * r.lo[i]];
            o2[i] = r.p[2 * r.hi[i] + 1] - r.p[2 * r.lo[i] + 1];
        }
    Py_END_ALLOW_THREADS
    release_all(&h);
    if (bad) {
        PyErr_SetString(PyExc_IndexError, "pair_diffs: index out of range");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* maximum(s2 - 2.0 * center * s1 + center * center * cnt, 0.0) with s1, s2
 * the sums of a and a**2 over the sorted indices [lo, hi) and cnt = hi - lo,
 * in NumPy's order of operations. An empty range reads no memory: its
 * differences are exactly 0.0 (the prefix sums are finite). */
static inline double
range_sq_one(const double *p, Py_ssize_t lo, Py_ssize_t hi, double c)
{
    double s1 = 0.0, s2 = 0.0;
    if (hi != lo) {
        s2 = p[2 * hi + 1] - p[2 * lo + 1];
        s1 = p[2 * hi] - p[2 * lo];
    }
    double cnt = (double)(hi - lo);
    double x = (s2 - (2.0 * c) * s1) + (c * c) * cnt;
    return (x != x || x >= 0.0) ? x : 0.0; /* np.maximum(x, 0.0): NaN propagates */
}

/* range_sq(pair, lo, hi, center, out): out = range_sq_one elementwise:
 * step_search's _range_sq. */
static PyObject *
range_sq(PyObject *self, PyObject *args)
{
    PyObject *pair_obj, *lo_obj, *hi_obj, *c_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOO", &pair_obj, &lo_obj, &hi_obj, &c_obj, &out_obj))
        return NULL;
    Held h = {.n = 0};
    Ranges r;
    if (hold_ranges(&h, pair_obj, lo_obj, hi_obj, "lo", "hi", &r) < 0)
        return NULL;
    const double *c = hold(&h, c_obj, 0, 'd', r.n, "center");
    double *o = c ? hold(&h, out_obj, 1, 'd', r.n, "out") : NULL;
    if (!o)
        return NULL;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    bad = check_ranges(&r);
    if (!bad)
        for (Py_ssize_t i = 0; i < r.n; i++)
            o[i] = range_sq_one(r.p, r.lo[i], r.hi[i], c[i]);
    Py_END_ALLOW_THREADS
    release_all(&h);
    if (bad) {
        PyErr_SetString(PyExc_IndexError, "range_sq: index out of range");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* NumPy's sum of a contiguous float64 array, in NumPy's order: 0.0 plus its
 * pairwise summation (blocks of at most 128 with eight accumulators, halved
 * at multiples of 8 above that). step_search checks at import that this is
 * what the installed NumPy computes, and uses polish only if it is. */
static double
pairwise(const double *a, Py_ssize_t n)
{
    if (n < 8) {
        double res = 0.0;
        for (Py_ssize_t i = 0; i < n; i++)
            res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; j++)
            r[j] = a[j];
        Py_ssize_t i;
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            res += a[i];
        return res;
    }
    Py_ssize_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise(a, n2) + pairwise(a + n2, n - n2);
}

static inline double
numpy_sum(const double *a, Py_ssize_t n)
{
    return 0.0 + pairwise(a, n);
}

/* sum(x) -> float: numpy_sum of a contiguous float64 buffer (for the check) */
static PyObject *
sum(PyObject *self, PyObject *arg)
{
    Held h = {.n = 0};
    const double *x = hold(&h, arg, 0, 'd', 0, "x");
    if (!x)
        return NULL;
    double s = numpy_sum(x, items_of_last(&h));
    release_all(&h);
    return PyFloat_FromDouble(s);
}

/* What one step evaluation needs: step_search's evaluate_one. */
typedef struct {
    Counter ct;
    const double *p; /* interleaved prefix sums */
    Py_ssize_t k;
    double k_p1n;      /* k * p1[n] */
    long long kkn;     /* k * k * n, below 2**53 (checked by the caller) */
    double total_sq;   /* p2[n] */
    Py_ssize_t *idx;   /* scratch, k items */
    double *gathered;  /* scratch, k items */
} Evaluator;

/* (E, S1, S2) of one step, bit for bit _SortedMagnitudes.evaluate_one (and
 * evaluate): counts below (j + 1/2) step, S1 = k p1[n] - sum_j p1[count_j],
 * S2 = k^2 n - sum_j (2j + 1) count_j (an integer, exact), E clipped at 0. */
static void
evaluate_step(const Evaluator *ev, double step, double *err, double *s1, double *s2)
{
    long long dot = 0;
    for (Py_ssize_t j = 0; j < ev->k; j++) {
        Py_ssize_t c = count_one(&ev->ct, step * ((double)j + 0.5));
        ev->idx[j] = c;
        dot += (long long)(2 * j + 1) * (long long)c;
    }
    for (Py_ssize_t j = 0; j < ev->k; j++)
        ev->gathered[j] = ev->p[2 * ev->idx[j]];
    *s1 = ev->k_p1n - numpy_sum(ev->gathered, ev->k);
    *s2 = (double)(ev->kkn - dot);
    double e = (ev->total_sq - (2.0 * step) * *s1) + (step * step) * *s2;
    *err = (e >= 0.0 || e != e) ? e : 0.0; /* max(e, 0.0) */
}

/* polish(a, pair, cum, scale, n_bins, k, steps, errs, s1s, s2s, max_iter):
 * step_search's Lloyd polish of every start, in place: while S1 > 0 and
 * S2 > 0, try step = S1 / S2 and keep it while the error drops (at most
 * max_iter evaluations). _lloyd_polish also tries a NaN S1 or S2, where this
 * stops; as a NaN step never lowers the error, both end on the same step. */
static PyObject *
polish(PyObject *self, PyObject *args)
{
    PyObject *a_obj, *pair_obj, *cum_obj, *st_obj, *er_obj, *s1_obj, *s2_obj;
    double scale;
    Py_ssize_t n_bins, k, max_iter;
    if (!PyArg_ParseTuple(args, "OOOdnnOOOOn", &a_obj, &pair_obj, &cum_obj, &scale, &n_bins, &k, &st_obj, &er_obj,
                          &s1_obj, &s2_obj, &max_iter))
        return NULL;
    if (k < 1 || k > 1 << 20) {
        PyErr_SetString(PyExc_ValueError, "polish needs 1 <= k <= 2**20");
        return NULL;
    }
    Magnitudes m;
    Held h = {.n = 0};
    Counter ct;
    if (hold_magnitudes(&h, a_obj, &m) < 0)
        return NULL;
    if ((double)k * (double)k * (double)m.n >= 9007199254740992.0) {
        release_all(&h);
        PyErr_SetString(PyExc_OverflowError, "polish: k * k * n must be below 2**53");
        return NULL;
    }
    const double *p = hold(&h, pair_obj, 0, 'd', 2 * (m.n + 1), "pair");
    double *steps = p ? hold(&h, st_obj, 1, 'd', 0, "steps") : NULL;
    Py_ssize_t runs = steps ? items_of_last(&h) : 0;
    double *errs = steps ? hold(&h, er_obj, 1, 'd', runs, "errs") : NULL;
    double *s1s = errs ? hold(&h, s1_obj, 1, 'd', runs, "s1s") : NULL;
    double *s2s = s1s ? hold(&h, s2_obj, 1, 'd', runs, "s2s") : NULL;
    void *scratch = NULL;
    if (!s2s || hold_counter(&h, &m, cum_obj, scale, n_bins, &ct) < 0 ||
        !(scratch = PyMem_Malloc(k * (sizeof(Py_ssize_t) + sizeof(double))))) {
        if (!PyErr_Occurred()) /* only the allocation failed */
            PyErr_NoMemory();
        release_all(&h);
        return NULL;
    }
    Evaluator ev = {ct, p, k, (double)k * p[2 * m.n], (long long)k * k * m.n, p[2 * m.n + 1], (Py_ssize_t *)scratch,
                    (double *)((char *)scratch + k * sizeof(Py_ssize_t))};
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < runs; r++) {
        double step = steps[r], err = errs[r], s1 = s1s[r], s2 = s2s[r];
        for (Py_ssize_t it = 0; it < max_iter; it++) {
            if (!(s2 > 0.0 && s1 > 0.0))
                break;
            double next = s1 / s2, e, n1, n2;
            evaluate_step(&ev, next, &e, &n1, &n2);
            if (!(e < err) || next == step)
                break;
            step = next, err = e, s1 = n1, s2 = n2;
        }
        steps[r] = step, errs[r] = err, s1s[r] = s1, s2s[r] = s2;
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(scratch);
    release_all(&h);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"prefix_sums", prefix_sums, METH_VARARGS, "prefix_sums(a, out): interleaved prefix sums of a and a**2"},
    {"count_table", count_table, METH_VARARGS, "count_table(a, scale, n_bins, cum) -> max occupancy"},
    {"count_below", count_below, METH_VARARGS, "count_below(a, queries, out, cum, scale, n_bins)"},
    {"pair_diffs", pair_diffs, METH_VARARGS, "pair_diffs(pair, start, stop, d1, d2): prefix-sum differences"},
    {"range_sq", range_sq, METH_VARARGS, "range_sq(pair, lo, hi, center, out): squared distances of index ranges"},
    {"sum", sum, METH_O, "sum(x): NumPy's sum of a float64 buffer, in NumPy's order"},
    {"polish", polish, METH_VARARGS,
     "polish(a, pair, cum, scale, n_bins, k, steps, errs, s1s, s2s, max_iter): Lloyd polish in place"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_counting",
                                    "Exact compiled counting for qdesign's step search.", -1, methods};

PyMODINIT_FUNC
PyInit__counting(void)
{
    return PyModule_Create(&module);
}
