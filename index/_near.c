/* Multi-index hashing over 256-bit codes: the C kernel of semhash.index.near_lookup.
 *
 * Codes are 4 uint64 words; the Python module cuts them into 16 words of 16 bits and keeps
 * per word the rows sorted by that word (order, int32) and where each value starts
 * (starts, 65,537 int64).  For each query and word, every value within `radius` bits of the
 * query's word is probed (masks), each candidate is checked on all 256 bits, and a pair is
 * emitted once: at the first word whose distance is within `radius` (a later word that
 * also reaches it skips it), so no set of seen rows is needed.  Words are any widths up to
 * 32 bits (the module uses 16 x 16 or 12 x 21-22); their directories are uint32 offsets.
 *
 * pairs() is the self-join over 16-bit words.  The GIL is released while the loops run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define KERNEL __attribute__((target("popcnt")))
#else
#define KERNEL
#endif

#define WORDS 16
#define PREFETCH 8

typedef struct {
    int64_t *q, *pos, *d;
    Py_ssize_t n, cap;
} out_t;

static int push(out_t *o, int64_t q, int64_t pos, int64_t d) {
    if (o->n == o->cap) {
        Py_ssize_t cap = o->cap ? 2 * o->cap : 1024;
        int64_t *a = realloc(o->q, cap * sizeof(int64_t)), *b, *c;
        if (!a) return -1;
        o->q = a;
        b = realloc(o->pos, cap * sizeof(int64_t));
        if (!b) return -1;
        o->pos = b;
        c = realloc(o->d, cap * sizeof(int64_t));
        if (!c) return -1;
        o->d = c;
        o->cap = cap;
    }
    o->q[o->n] = q;
    o->pos[o->n] = pos;
    o->d[o->n] = d;
    o->n++;
    return 0;
}

/* bits lo..lo+width-1 of a 256-bit code (width <= 32) */
static inline uint32_t word_of(const uint64_t *code, int lo, int width) {
    int lane = lo >> 6, off = lo & 63;
    uint64_t v = code[lane] >> off;
    if (off + width > 64) v |= code[lane + 1] << (64 - off);
    return (uint32_t)(v & ((1ULL << width) - 1));
}

KERNEL static int run(const uint64_t *codes, Py_ssize_t n, const int32_t *order, const uint32_t *starts,
                      const int64_t *offsets, const int32_t *words, int n_words, const uint64_t *queries,
                      Py_ssize_t nq, const int64_t *masks, Py_ssize_t n_masks, int threshold, int radius, out_t *out) {
    for (Py_ssize_t qi = 0; qi < nq; qi++) {
        const uint64_t *query = queries + 4 * qi;
        for (int w = 0; w < n_words; w++) {
            int lo = words[2 * w], width = words[2 * w + 1];
            uint32_t qw = word_of(query, lo, width);
            const int32_t *ord = order + (Py_ssize_t)w * n;
            const uint32_t *st = starts + offsets[w];
            for (Py_ssize_t m = 0; m < n_masks; m++) {
                if ((uint64_t)masks[m] >> width) continue; /* a mask for a wider word */
                uint32_t value = qw ^ (uint32_t)masks[m];
                int64_t end = st[value + 1];
                for (int64_t k = st[value]; k < end; k++) {
                    /* the codes are read at random: ask for the ones a few rows ahead now */
                    if (k + PREFETCH < end) __builtin_prefetch(codes + 4 * (Py_ssize_t)ord[k + PREFETCH]);
                    int64_t pos = ord[k];
                    const uint64_t *c = codes + 4 * pos;
                    uint64_t x[4] = {c[0] ^ query[0], c[1] ^ query[1], c[2] ^ query[2], c[3] ^ query[3]};
                    int d = __builtin_popcountll(x[0]) + __builtin_popcountll(x[1]) + __builtin_popcountll(x[2]) +
                            __builtin_popcountll(x[3]);
                    if (d > threshold) continue;
                    /* emitted at the first word within radius only */
                    int earlier = 0;
                    for (int v = 0; v < w; v++) {
                        if (__builtin_popcount(word_of(x, words[2 * v], words[2 * v + 1])) <= radius) {
                            earlier = 1;
                            break;
                        }
                    }
                    if (earlier) continue;
                    if (push(out, qi, pos, d) < 0) return -1;
                }
            }
        }
    }
    return 0;
}

/* Self-join through one word w: `sorted` holds the codes in the order of word w (bucket by
 * bucket, so both sides of every comparison are read sequentially), `order` maps a sorted
 * position back to the row.  Pairs within a bucket, and between buckets v and v ^ mask
 * (v < v ^ mask, so each once); a pair within radius on an earlier word was emitted there. */
KERNEL static int run_pairs(const uint64_t *sorted, const int32_t *order, const int64_t *starts, int w,
                            const int64_t *masks, Py_ssize_t n_masks, int threshold, int radius, out_t *out) {
    for (int v = 0; v < 65536; v++) {
        for (Py_ssize_t m = 0; m < n_masks; m++) {
            int u = v ^ (int)masks[m];
            if (u < v) continue;
            int64_t a0 = starts[v], a1 = starts[v + 1], b0 = starts[u], b1 = starts[u + 1];
            for (int64_t a = a0; a < a1; a++) {
                const uint64_t *x = sorted + 4 * a;
                for (int64_t b = (u == v ? a + 1 : b0); b < b1; b++) {
                    const uint64_t *y = sorted + 4 * b;
                    uint64_t x0 = x[0] ^ y[0], x1 = x[1] ^ y[1], x2 = x[2] ^ y[2], x3 = x[3] ^ y[3];
                    int d = __builtin_popcountll(x0) + __builtin_popcountll(x1) + __builtin_popcountll(x2) + __builtin_popcountll(x3);
                    if (d > threshold) continue;
                    uint64_t xs[4] = {x0, x1, x2, x3};
                    int earlier = 0;
                    for (int e = 0; e < w; e++) {
                        if (__builtin_popcountll((xs[e >> 2] >> ((e & 3) * 16)) & 0xFFFF) <= radius) {
                            earlier = 1;
                            break;
                        }
                    }
                    if (earlier) continue;
                    int64_t i = order[a], j = order[b];
                    if (push(out, i < j ? i : j, i < j ? j : i, d) < 0) return -1;
                }
            }
        }
    }
    return 0;
}

static PyObject *as_bytes(const int64_t *a, Py_ssize_t n) {
    return PyBytes_FromStringAndSize((const char *)a, n * (Py_ssize_t)sizeof(int64_t));
}

/* the (q, pos, d) bytes a kernel found, its buffers freed; NULL with MemoryError when it ran out */
static PyObject *finish(int rc, out_t *out) {
    PyObject *result = NULL;
    if (rc < 0) {
        PyErr_NoMemory();
    } else {
        result = Py_BuildValue("(NNN)", as_bytes(out->q, out->n), as_bytes(out->pos, out->n), as_bytes(out->d, out->n));
    }
    free(out->q);
    free(out->pos);
    free(out->d);
    return result;
}

static PyObject *py_search(PyObject *self, PyObject *args) {
    Py_buffer codes, order, starts, offsets, words, queries, masks;
    int threshold, radius;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*ii", &codes, &order, &starts, &offsets, &words, &queries, &masks,
                          &threshold, &radius))
        return NULL;
    Py_ssize_t n = codes.len / 32, nq = queries.len / 32, n_masks = masks.len / 8;
    int n_words = (int)(words.len / 8);
    PyObject *result = NULL;
    int ok = offsets.len == (Py_ssize_t)n_words * 8 && order.len == (Py_ssize_t)n_words * n * 4 && n_words > 0;
    for (int w = 0; ok && w < n_words; w++) {
        int lo = ((const int32_t *)words.buf)[2 * w], width = ((const int32_t *)words.buf)[2 * w + 1];
        int64_t off = ((const int64_t *)offsets.buf)[w];
        ok = lo >= 0 && width >= 1 && width <= 32 && lo + width <= 256 && off >= 0 &&
             (off + ((int64_t)1 << width) + 1) * 4 <= starts.len;
    }
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "near kernel: directory sizes do not match the codes");
        goto done;
    }
    out_t out = {NULL, NULL, NULL, 0, 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = run((const uint64_t *)codes.buf, n, (const int32_t *)order.buf, (const uint32_t *)starts.buf,
             (const int64_t *)offsets.buf, (const int32_t *)words.buf, n_words, (const uint64_t *)queries.buf, nq,
             (const int64_t *)masks.buf, n_masks, threshold, radius, &out);
    Py_END_ALLOW_THREADS
    result = finish(rc, &out);
done:
    PyBuffer_Release(&codes);
    PyBuffer_Release(&order);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&words);
    PyBuffer_Release(&queries);
    PyBuffer_Release(&masks);
    return result;
}

static PyObject *py_pairs(PyObject *self, PyObject *args) {
    Py_buffer sorted, order, starts, masks;
    int w, threshold, radius;
    if (!PyArg_ParseTuple(args, "y*y*y*iy*ii", &sorted, &order, &starts, &w, &masks, &threshold, &radius)) return NULL;
    Py_ssize_t n = sorted.len / 32, n_masks = masks.len / 8;
    PyObject *result = NULL;
    if (order.len != n * 4 || starts.len != 65537 * 8) {
        PyErr_SetString(PyExc_ValueError, "near kernel: directory sizes do not match the codes");
        goto done;
    }
    out_t out = {NULL, NULL, NULL, 0, 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = run_pairs((const uint64_t *)sorted.buf, (const int32_t *)order.buf, (const int64_t *)starts.buf, w,
                   (const int64_t *)masks.buf, n_masks, threshold, radius, &out);
    Py_END_ALLOW_THREADS
    result = finish(rc, &out);
done:
    PyBuffer_Release(&sorted);
    PyBuffer_Release(&order);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&masks);
    return result;
}

static PyMethodDef methods[] = {
    {"pairs", py_pairs, METH_VARARGS,
     "pairs(codes sorted by word w, order_i32 of word w, starts_i64 of word w, w, masks_i64, threshold, radius) -> (i, j, d) int64 bytes"},
    {"search", py_search, METH_VARARGS,
     "search(codes, order_i32, starts_u32, offsets_i64, words_i32, queries, masks_i64, threshold, radius) -> (q, pos, d) int64 bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_near", "C kernel of semhash.index.near_lookup", -1, methods};

PyMODINIT_FUNC PyInit__near(void) { return PyModule_Create(&module); }
