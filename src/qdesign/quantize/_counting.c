/* The integer parts of the L2-optimal step search (step_search.py), compiled.
 *
 * Optional: setup.py builds it where a C compiler is found, and step_search.py
 * falls back to NumPy without it. Every function returns exactly what its
 * NumPy counterpart in step_search.py returns (counts are integers; the
 * prefix sums add in NumPy's cumsum order, one element after the other), so
 * the steps never depend on whether it was built; tests/test_counting.py
 * checks both paths against each other.
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

typedef struct {
    Py_buffer view;
    int is_f32; /* else float64 */
    Py_ssize_t n;
} Magnitudes;

static int
get_magnitudes(PyObject *obj, Magnitudes *m)
{
    if (PyObject_GetBuffer(obj, &m->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *f = m->view.format ? m->view.format : "B";
    if (*f == '=' || *f == '<' || *f == '@')
        f++;
    if (strcmp(f, "f") == 0 && m->view.itemsize == 4)
        m->is_f32 = 1;
    else if (strcmp(f, "d") == 0 && m->view.itemsize == 8)
        m->is_f32 = 0;
    else {
        PyBuffer_Release(&m->view);
        PyErr_SetString(PyExc_TypeError, "magnitudes must be a contiguous float32 or float64 buffer");
        return -1;
    }
    m->n = m->view.len / m->view.itemsize;
    return 0;
}

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

#define AT(m, i) ((m)->is_f32 ? (double)((const float *)(m)->view.buf)[i] : ((const double *)(m)->view.buf)[i])

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
    Py_buffer out;
    if (get_magnitudes(a_obj, &m) < 0)
        return NULL;
    if (get_typed(out_obj, &out, 1, 'd', 2 * (m.n + 1), "out") < 0) {
        PyBuffer_Release(&m.view);
        return NULL;
    }
    double *p = (double *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    double s1 = 0.0, s2 = 0.0;
    p[0] = 0.0;
    p[1] = 0.0;
    if (m.is_f32) {
        const float *a = (const float *)m.view.buf;
        for (Py_ssize_t i = 0; i < m.n; i++) {
            double x = (double)a[i];
            s1 = s1 + x;
            s2 = s2 + x * x;
            p[2 * i + 2] = s1;
            p[2 * i + 3] = s2;
        }
    }
    else {
        const double *a = (const double *)m.view.buf;
        for (Py_ssize_t i = 0; i < m.n; i++) {
            double x = a[i];
            s1 = s1 + x;
            s2 = s2 + x * x;
            p[2 * i + 2] = s1;
            p[2 * i + 3] = s2;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    PyBuffer_Release(&m.view);
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
    Py_buffer cum;
    if (get_magnitudes(a_obj, &m) < 0)
        return NULL;
    if (get_typed(cum_obj, &cum, 1, 'l', n_bins + 2, "cum") < 0) {
        PyBuffer_Release(&m.view);
        return NULL;
    }
    Py_ssize_t *c = (Py_ssize_t *)cum.buf;
    Py_ssize_t max_occ = 0;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    /* magnitudes are sorted, so their bins are too: one pass writes every
     * bin's start (cum[b] = index of the first magnitude in bin >= b) */
    Py_ssize_t b_next = 0; /* the next table entry to fill */
    for (Py_ssize_t i = 0; i < m.n; i++) {
        double v = AT(&m, i);
        if (v != v) {
            bad = 1;
            break;
        }
        Py_ssize_t b = bin_of(v, scale, n_bins);
        while (b_next <= b)
            c[b_next++] = i;
    }
    while (b_next <= n_bins + 1)
        c[b_next++] = m.n;
    if (!bad)
        for (Py_ssize_t b = 0; b <= n_bins; b++)
            if (c[b + 1] - c[b] > max_occ)
                max_occ = c[b + 1] - c[b];
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&cum);
    PyBuffer_Release(&m.view);
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
    Py_buffer q, out, cum;
    int have_cum = cum_obj != Py_None;
    if (have_cum && (n_bins < 1 || !(scale > 0.0) || !isfinite(scale))) {
        PyErr_SetString(PyExc_ValueError, "count_below needs n_bins >= 1 and a finite scale > 0");
        return NULL;
    }
    if (get_magnitudes(a_obj, &m) < 0)
        return NULL;
    if (get_typed(q_obj, &q, 0, 'd', 0, "queries") < 0) {
        PyBuffer_Release(&m.view);
        return NULL;
    }
    Py_ssize_t nq = q.len / 8;
    if (get_typed(out_obj, &out, 1, 'l', nq, "out") < 0) {
        PyBuffer_Release(&q);
        PyBuffer_Release(&m.view);
        return NULL;
    }
    if (have_cum && get_typed(cum_obj, &cum, 0, 'l', n_bins + 2, "cum") < 0) {
        PyBuffer_Release(&out);
        PyBuffer_Release(&q);
        PyBuffer_Release(&m.view);
        return NULL;
    }
    const double *v = (const double *)q.buf;
    Py_ssize_t *o = (Py_ssize_t *)out.buf;
    const Py_ssize_t *c = have_cum ? (const Py_ssize_t *)cum.buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nq; i++) {
        double x = v[i];
        if (c != NULL && x == x) {
            Py_ssize_t b = bin_of(x, scale, n_bins);
            o[i] = lower_bound(&m, c[b], c[b + 1], x);
        }
        else
            o[i] = lower_bound(&m, 0, m.n, x);
    }
    Py_END_ALLOW_THREADS
    if (have_cum)
        PyBuffer_Release(&cum);
    PyBuffer_Release(&out);
    PyBuffer_Release(&q);
    PyBuffer_Release(&m.view);
    Py_RETURN_NONE;
}

/* The prefix sums' elementwise differences, for the lower bounds. Elementwise
 * float64 arithmetic rounds the same in C as in NumPy, operation by
 * operation (the reductions stay in NumPy, whose summation order is its own).
 * `pair` is the interleaved (p1, p2) buffer of prefix_sums. */
static int
get_pair(PyObject *obj, Py_buffer *view)
{
    return get_typed(obj, view, 0, 'd', 2, "pair");
}

static int
check_index(const Py_ssize_t *idx, Py_ssize_t n, Py_ssize_t limit)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= limit)
            return -1;
    return 0;
}

/* pair_diffs(pair, start, stop, d1, d2): d1 = p1[stop] - p1[start],
 * d2 = p2[stop] - p2[start], elementwise. */
static PyObject *
pair_diffs(PyObject *self, PyObject *args)
{
    PyObject *pair_obj, *start_obj, *stop_obj, *d1_obj, *d2_obj;
    if (!PyArg_ParseTuple(args, "OOOOO", &pair_obj, &start_obj, &stop_obj, &d1_obj, &d2_obj))
        return NULL;
    Py_buffer pair, start, stop, d1, d2;
    if (get_pair(pair_obj, &pair) < 0)
        return NULL;
    if (get_typed(start_obj, &start, 0, 'l', 0, "start") < 0)
        goto fail0;
    Py_ssize_t n = start.len / 8;
    if (get_typed(stop_obj, &stop, 0, 'l', n, "stop") < 0)
        goto fail1;
    if (get_typed(d1_obj, &d1, 1, 'd', n, "d1") < 0)
        goto fail2;
    if (get_typed(d2_obj, &d2, 1, 'd', n, "d2") < 0)
        goto fail3;
    const double *p = (const double *)pair.buf;
    const Py_ssize_t *a = (const Py_ssize_t *)start.buf, *b = (const Py_ssize_t *)stop.buf;
    double *o1 = (double *)d1.buf, *o2 = (double *)d2.buf;
    Py_ssize_t limit = pair.len / 16;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    bad = check_index(a, n, limit) || check_index(b, n, limit);
    if (!bad)
        for (Py_ssize_t i = 0; i < n; i++) {
            o1[i] = p[2 * b[i]] - p[2 * a[i]];
            o2[i] = p[2 * b[i] + 1] - p[2 * a[i] + 1];
        }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&d2);
    PyBuffer_Release(&d1);
    PyBuffer_Release(&stop);
    PyBuffer_Release(&start);
    PyBuffer_Release(&pair);
    if (bad) {
        PyErr_SetString(PyExc_IndexError, "pair_diffs: index out of range");
        return NULL;
    }
    Py_RETURN_NONE;
fail3:
    PyBuffer_Release(&d1);
fail2:
    PyBuffer_Release(&stop);
fail1:
    PyBuffer_Release(&start);
fail0:
    PyBuffer_Release(&pair);
    return NULL;
}

/* range_sq(pair, lo, hi, center, out): out = maximum(s2 - 2.0 * center * s1
 * + center * center * cnt, 0.0) with s1, s2 the sums of a and a**2 over the
 * sorted indices [lo, hi) and cnt = hi - lo: step_search's _range_sq, in
 * NumPy's order of operations. */
static PyObject *
range_sq(PyObject *self, PyObject *args)
{
    PyObject *pair_obj, *lo_obj, *hi_obj, *c_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOO", &pair_obj, &lo_obj, &hi_obj, &c_obj, &out_obj))
        return NULL;
    Py_buffer pair, lo, hi, cen, out;
    if (get_pair(pair_obj, &pair) < 0)
        return NULL;
    if (get_typed(lo_obj, &lo, 0, 'l', 0, "lo") < 0)
        goto fail0;
    Py_ssize_t n = lo.len / 8;
    if (get_typed(hi_obj, &hi, 0, 'l', n, "hi") < 0)
        goto fail1;
    if (get_typed(c_obj, &cen, 0, 'd', n, "center") < 0)
        goto fail2;
    if (get_typed(out_obj, &out, 1, 'd', n, "out") < 0)
        goto fail3;
    const double *p = (const double *)pair.buf, *c = (const double *)cen.buf;
    const Py_ssize_t *a = (const Py_ssize_t *)lo.buf, *b = (const Py_ssize_t *)hi.buf;
    double *o = (double *)out.buf;
    Py_ssize_t limit = pair.len / 16;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    bad = check_index(a, n, limit) || check_index(b, n, limit);
    if (!bad)
        for (Py_ssize_t i = 0; i < n; i++) {
            double s2 = p[2 * b[i] + 1] - p[2 * a[i] + 1];
            double s1 = p[2 * b[i]] - p[2 * a[i]];
            double cnt = (double)(b[i] - a[i]);
            double x = (s2 - (2.0 * c[i]) * s1) + (c[i] * c[i]) * cnt;
            o[i] = (x != x || x >= 0.0) ? x : 0.0; /* np.maximum(x, 0.0): NaN propagates */
        }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    PyBuffer_Release(&cen);
    PyBuffer_Release(&hi);
    PyBuffer_Release(&lo);
    PyBuffer_Release(&pair);
    if (bad) {
        PyErr_SetString(PyExc_IndexError, "range_sq: index out of range");
        return NULL;
    }
    Py_RETURN_NONE;
fail3:
    PyBuffer_Release(&cen);
fail2:
    PyBuffer_Release(&hi);
fail1:
    PyBuffer_Release(&lo);
fail0:
    PyBuffer_Release(&pair);
    return NULL;
}

static PyMethodDef methods[] = {
    {"prefix_sums", prefix_sums, METH_VARARGS, "prefix_sums(a, out): interleaved prefix sums of a and a**2"},
    {"count_table", count_table, METH_VARARGS, "count_table(a, scale, n_bins, cum) -> max occupancy"},
    {"count_below", count_below, METH_VARARGS, "count_below(a, queries, out, cum, scale, n_bins)"},
    {"pair_diffs", pair_diffs, METH_VARARGS, "pair_diffs(pair, start, stop, d1, d2): prefix-sum differences"},
    {"range_sq", range_sq, METH_VARARGS, "range_sq(pair, lo, hi, center, out): squared distances of index ranges"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_counting",
                                    "Exact compiled counting for qdesign's step search.", -1, methods};

PyMODINIT_FUNC
PyInit__counting(void)
{
    return PyModule_Create(&module);
}
