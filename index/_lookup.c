/* Exact Hamming radius search over bucket tables: the C kernel of semhash.index.lookup.
 *
 * A table is keyed on one contiguous range of code bits [lo, lo + k): a directory of
 * 2^k + 1 offsets (uint32 or uint64) into its rows, which are sorted by key; each row stores
 * its residual (the code with the key bits squeezed out: uint8/16/32/64) and its row id
 * (uint32 or int64).  The Python module builds the tables, plans which ones to use with
 * which probe radius t_i, and checks every argument; this file only runs the loops.
 *
 * probe(): multi-index hashing (Norouzi et al.).  With the used tables' key ranges disjoint
 * and sum(t_i + 1) >= r + 1, a code within r of the query is within t_i of it on the key
 * range of at least one table i (pigeonhole), so probing every key within t_i of the
 * query's key in every table finds it.  With one table and t = r this is the plain
 * "probe every neighbour key" bucket table.  A row reachable from several tables is
 * emitted once: at the first (key distance, table) pair in probing order.
 * scan(): every bucket of one table in address order, skipping buckets whose key alone is
 * farther than r.
 *
 * Per query, matches come out sorted by (distance, id).  limit > 0 stops early: probing
 * goes level by level (key distance s = 0, 1, ...); after level s every row within
 * D_s = sum_i(min(s, t_i) + 1) - 1 of the query has been seen, so once the rows at distance
 * <= D_s number at least `limit`, no later level can change the first `limit` rows.
 * keep_ties then returns every row at the distance of the limit-th row, else exactly limit.
 *
 * The GIL is released while the loops run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define KERNEL __attribute__((target("popcnt")))
#define HAVE_CPU_CHECK 1
#else
#define KERNEL
#define HAVE_CPU_CHECK 0
#endif

#define MAX_TABLES 8
#define SIGN64 0x8000000000000000ULL

static inline uint64_t low_mask(int w) { return w >= 64 ? ~0ULL : ((1ULL << w) - 1ULL); }
static inline uint64_t shr(uint64_t x, int s) { return s >= 64 ? 0ULL : x >> s; }

typedef struct {
    int lo, k, t;
    int res_size, id_size, dir_size;
    Py_ssize_t n_rows;
    const void *dir, *res, *ids;
    uint64_t other[MAX_TABLES]; /* key range of table j in this table's residual coordinates */
    Py_buffer bufs[3];
    int n_bufs;
} table_t;

/* the residual: the code with bits [lo, lo+k) removed and the bits above shifted down */
static inline uint64_t residual(uint64_t x, int lo, int k) {
    return (x & low_mask(lo)) | (shr(x, lo + k) << lo);
}

static inline uint64_t dir_at(const table_t *t, uint64_t i) {
    return t->dir_size == 4 ? ((const uint32_t *)t->dir)[i] : ((const uint64_t *)t->dir)[i];
}

static inline uint64_t id_key_at(const table_t *t, Py_ssize_t j) {
    /* ids in an unsigned order-preserving form, so one radix sort serves both widths */
    return t->id_size == 4 ? (uint64_t)((const uint32_t *)t->ids)[j]
                           : ((uint64_t)((const int64_t *)t->ids)[j]) ^ SIGN64;
}

/* ------------------------------------------------------------------ growable buffers */
typedef struct {
    uint64_t *ids;
    uint8_t *d;
    Py_ssize_t n, cap;
} found_t;

static int found_push(found_t *f, uint64_t id, int d) {
    if (f->n == f->cap) {
        Py_ssize_t cap = f->cap ? 2 * f->cap : 256;
        uint64_t *ids = realloc(f->ids, cap * sizeof(uint64_t));
        if (!ids) return -1;
        f->ids = ids;
        uint8_t *dd = realloc(f->d, cap);
        if (!dd) return -1;
        f->d = dd;
        f->cap = cap;
    }
    f->ids[f->n] = id;
    f->d[f->n] = (uint8_t)d;
    f->n++;
    return 0;
}

typedef struct {
    int64_t *ids;
    uint8_t *d;
    Py_ssize_t n, cap;
} out_t;

static int out_reserve(out_t *o, Py_ssize_t extra) {
    if (o->n + extra <= o->cap) return 0;
    Py_ssize_t cap = o->cap ? o->cap : 1024;
    while (cap < o->n + extra) cap *= 2;
    int64_t *ids = realloc(o->ids, cap * sizeof(int64_t));
    if (!ids) return -1;
    o->ids = ids;
    uint8_t *d = realloc(o->d, cap);
    if (!d) return -1;
    o->d = d;
    o->cap = cap;
    return 0;
}

/* ------------------------------------------------------------------ sorting uint64 keys */
static void insertion_sort(uint64_t *a, Py_ssize_t n) {
    for (Py_ssize_t i = 1; i < n; i++) {
        uint64_t v = a[i];
        Py_ssize_t j = i;
        while (j > 0 && a[j - 1] > v) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = v;
    }
}

/* LSD radix sort on the bytes that vary; tmp holds n keys.  A tier that is already in
 * order (the rows of one bucket are stored by id, so every radius-0 answer is) is left as it is. */
static void radix_sort(uint64_t *a, uint64_t *tmp, Py_ssize_t n) {
    Py_ssize_t ordered = 1;
    while (ordered < n && a[ordered - 1] <= a[ordered]) ordered++;
    if (ordered >= n) return;
    if (n < 64) {
        insertion_sort(a, n);
        return;
    }
    uint64_t varying = 0;
    for (Py_ssize_t i = 1; i < n; i++) varying |= a[i] ^ a[0];
    uint64_t *src = a, *dst = tmp;
    for (int byte = 0; byte < 8; byte++) {
        int shift = 8 * byte;
        if (((varying >> shift) & 0xFF) == 0) continue;
        Py_ssize_t count[257];
        memset(count, 0, sizeof(count));
        for (Py_ssize_t i = 0; i < n; i++) count[((src[i] >> shift) & 0xFF) + 1]++;
        for (int b = 0; b < 256; b++) count[b + 1] += count[b];
        for (Py_ssize_t i = 0; i < n; i++) dst[count[(src[i] >> shift) & 0xFF]++] = src[i];
        uint64_t *swap = src;
        src = dst;
        dst = swap;
    }
    if (src != a) memcpy(a, src, n * sizeof(uint64_t));
}

/* Sort one query's matches by (distance, id), apply the limit, append them to out. */
static int emit_query(found_t *f, int r, Py_ssize_t limit, int keep_ties, int signed_ids, out_t *out,
                      uint64_t **scratch, Py_ssize_t *scratch_cap) {
    Py_ssize_t start[66];
    memset(start, 0, sizeof(start));
    for (Py_ssize_t i = 0; i < f->n; i++) start[f->d[i] + 1]++;
    for (int d = 0; d <= r; d++) start[d + 1] += start[d];
    Py_ssize_t total = start[r + 1];
    Py_ssize_t keep = total;
    int last_d = r;
    if (limit > 0 && total > limit) {
        last_d = 0;
        while (start[last_d + 1] < limit) last_d++;
        keep = keep_ties ? start[last_d + 1] : limit;
    }
    Py_ssize_t placed = start[last_d + 1]; /* rows in the tiers that are (partly) kept */
    if (*scratch_cap < 2 * placed) {
        Py_ssize_t cap = 2 * placed + 256;
        uint64_t *s = realloc(*scratch, cap * sizeof(uint64_t));
        if (!s) return -1;
        *scratch = s;
        *scratch_cap = cap;
    }
    uint64_t *sorted = *scratch, *tmp = *scratch + placed;
    Py_ssize_t pos[66];
    memcpy(pos, start, sizeof(pos));
    for (Py_ssize_t i = 0; i < f->n; i++) {
        int d = f->d[i];
        if (d <= last_d) sorted[pos[d]++] = f->ids[i];
    }
    for (int d = 0; d <= last_d; d++) radix_sort(sorted + start[d], tmp, start[d + 1] - start[d]);
    if (out_reserve(out, keep) < 0) return -1;
    int d = 0;
    for (Py_ssize_t i = 0; i < keep; i++) {
        while (i >= start[d + 1]) d++;
        out->ids[out->n + i] = signed_ids ? (int64_t)(sorted[i] ^ SIGN64) : (int64_t)sorted[i];
        out->d[out->n + i] = (uint8_t)d;
    }
    out->n += keep;
    return 0;
}

/* ------------------------------------------------------------------ the bucket scan */
/* Scan rows [a, b) of table ti whose key is at distance s from the query's key. */
#define SCAN_BUCKET(RES_T)                                                                     \
    do {                                                                                       \
        const RES_T *res = (const RES_T *)tb->res;                                             \
        for (Py_ssize_t j = a; j < b; j++) {                                                   \
            uint64_t x = (uint64_t)res[j] ^ qres;                                              \
            int d = s + __builtin_popcountll(x);                                               \
            if (d > r) continue;                                                               \
            if (n_used > 1) {                                                                  \
                int owned = 1;                                                                 \
                for (int oj = 0; oj < n_used; oj++) {                                          \
                    if (oj == ti) continue;                                                    \
                    int dj = __builtin_popcountll(x & tb->other[oj]);                          \
                    if (dj <= tables[oj].t && (dj < s || (dj == s && oj < ti))) {              \
                        owned = 0;                                                             \
                        break;                                                                 \
                    }                                                                          \
                }                                                                              \
                if (!owned) continue;                                                          \
            }                                                                                  \
            if (found_push(f, id_key_at(tb, j), d) < 0) return -1;                             \
        }                                                                                      \
    } while (0)

static inline KERNEL int scan_bucket(const table_t *tables, int n_used, int ti, Py_ssize_t a, Py_ssize_t b,
                                     uint64_t qres, int s, int r, found_t *f) {
    const table_t *tb = &tables[ti];
    switch (tb->res_size) {
    case 1: SCAN_BUCKET(uint8_t); break;
    case 2: SCAN_BUCKET(uint16_t); break;
    case 4: SCAN_BUCKET(uint32_t); break;
    default: SCAN_BUCKET(uint64_t); break;
    }
    return 0;
}

/* Probing is bound by memory latency (a directory entry and a bucket per key, anywhere in
 * a table of hundreds of MB), so the loop keeps many misses in flight: the directory entry
 * of key p + 2*AHEAD and the bucket of key p + AHEAD are prefetched while key p is read. */
#define AHEAD 8

static KERNEL int probe_level(const table_t *tables, int n_used, int ti, const uint64_t *m, Py_ssize_t n_masks,
                              uint64_t key0, uint64_t qres, int s, int r, found_t *f) {
    const table_t *tb = &tables[ti];
    const char *dir = (const char *)tb->dir, *res = (const char *)tb->res;
    int ds = tb->dir_size, rs = tb->res_size;
    for (Py_ssize_t p = 0; p < n_masks; p++) {
        if (p + 2 * AHEAD < n_masks) __builtin_prefetch(dir + (key0 ^ m[p + 2 * AHEAD]) * ds);
        if (p + AHEAD < n_masks) __builtin_prefetch(res + dir_at(tb, key0 ^ m[p + AHEAD]) * rs);
        uint64_t key = key0 ^ m[p];
        Py_ssize_t a = (Py_ssize_t)dir_at(tb, key), b = (Py_ssize_t)dir_at(tb, key + 1);
        if (a < b && scan_bucket(tables, n_used, ti, a, b, qres, s, r, f) < 0) return -1;
    }
    return 0;
}

/* One query through the used tables, level by level. */
static KERNEL int probe_query(const table_t *tables, int n_used, const uint64_t *masks,
                              const Py_ssize_t *mask_start, int max_t, uint64_t q, int r,
                              Py_ssize_t limit, found_t *f) {
    uint64_t qkey[MAX_TABLES], qres[MAX_TABLES];
    for (int i = 0; i < n_used; i++) {
        qkey[i] = shr(q, tables[i].lo) & low_mask(tables[i].k);
        qres[i] = residual(q, tables[i].lo, tables[i].k);
    }
    Py_ssize_t hist[66];
    memset(hist, 0, sizeof(hist));
    for (int s = 0; s <= max_t; s++) {
        Py_ssize_t before = f->n;
        for (int i = 0; i < n_used; i++) {
            if (s > tables[i].t) continue;
            Py_ssize_t a = mask_start[i * 66 + s], b = mask_start[i * 66 + s + 1];
            if (probe_level(tables, n_used, i, masks + a, b - a, qkey[i], qres[i], s, r, f) < 0) return -1;
        }
        if (limit > 0) {
            for (Py_ssize_t j = before; j < f->n; j++) hist[f->d[j]]++;
            int complete = -1; /* every row within this distance has been seen */
            for (int i = 0; i < n_used; i++) complete += (s < tables[i].t ? s : tables[i].t) + 1;
            if (complete > r) complete = r;
            Py_ssize_t seen = 0;
            for (int d = 0; d <= complete; d++) seen += hist[d];
            if (seen >= limit) break;
        }
    }
    return 0;
}

static KERNEL int scan_query(const table_t *tb, uint64_t q, int r, found_t *f) {
    uint64_t qkey = shr(q, tb->lo) & low_mask(tb->k);
    uint64_t qres = residual(q, tb->lo, tb->k);
    uint64_t n_keys = 1ULL << tb->k;
    for (uint64_t key = 0; key < n_keys; key++) {
        Py_ssize_t a = (Py_ssize_t)dir_at(tb, key), b = (Py_ssize_t)dir_at(tb, key + 1);
        if (a == b) continue;
        int s = __builtin_popcountll(key ^ qkey);
        if (s > r) continue;
        if (scan_bucket(tb, 1, 0, a, b, qres, s, r, f) < 0) return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ argument plumbing */
static void release_tables(table_t *tables, int n) {
    for (int i = 0; i < n; i++)
        for (int b = 0; b < tables[i].n_bufs; b++) PyBuffer_Release(&tables[i].bufs[b]);
}

static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t expect, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->len != expect) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", what, view->len, expect);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* (lo, k, t, res_size, id_size, dir_size, n_rows, dir, res, ids) per table */
static int parse_tables(PyObject *seq, table_t *tables, int *n_out) {
    *n_out = 0;
    PyObject *fast = PySequence_Fast(seq, "tables must be a sequence");
    if (!fast) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n < 1 || n > MAX_TABLES) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "between 1 and %d tables, got %zd", MAX_TABLES, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        table_t *t = &tables[i];
        PyObject *dir, *res, *ids;
        memset(t, 0, sizeof(*t));
        *n_out = (int)i + 1; /* release whatever this table acquired if it fails */
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "iiiiiinOOO", &t->lo, &t->k, &t->t,
                              &t->res_size, &t->id_size, &t->dir_size, &t->n_rows, &dir, &res, &ids))
            goto fail;
        if (t->lo < 0 || t->k < 0 || t->k > 32 || t->lo + t->k > 64 || t->n_rows < 0 || t->t < 0 ||
            (t->res_size != 1 && t->res_size != 2 && t->res_size != 4 && t->res_size != 8) ||
            (t->id_size != 4 && t->id_size != 8) || (t->dir_size != 4 && t->dir_size != 8)) {
            PyErr_SetString(PyExc_ValueError, "bad table layout");
            goto fail;
        }
        if (t->t > t->k) t->t = t->k;
        if (get_buffer(dir, &t->bufs[0], (Py_ssize_t)(((1LL << t->k) + 1) * t->dir_size), "directory") < 0) goto fail;
        t->n_bufs = 1;
        if (get_buffer(res, &t->bufs[1], t->n_rows * t->res_size, "residuals") < 0) goto fail;
        t->n_bufs = 2;
        if (get_buffer(ids, &t->bufs[2], t->n_rows * t->id_size, "ids") < 0) goto fail;
        t->n_bufs = 3;
        t->dir = t->bufs[0].buf;
        t->res = t->bufs[1].buf;
        t->ids = t->bufs[2].buf;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            tables[i].other[j] = residual(low_mask(tables[j].k) << tables[j].lo, tables[i].lo, tables[i].k);
    Py_DECREF(fast);
    return 0;
fail:
    Py_DECREF(fast);
    release_tables(tables, *n_out);
    *n_out = 0;
    return -1;
}

static PyObject *finish(out_t *out, Py_ssize_t *offsets, Py_ssize_t n_queries, int failed) {
    PyObject *result = NULL;
    if (!failed) {
        PyObject *o = PyBytes_FromStringAndSize((const char *)offsets, (n_queries + 1) * sizeof(Py_ssize_t));
        PyObject *i = PyBytes_FromStringAndSize((const char *)out->ids, out->n * sizeof(int64_t));
        PyObject *d = PyBytes_FromStringAndSize((const char *)out->d, out->n);
        if (o && i && d) result = PyTuple_Pack(3, o, i, d);
        Py_XDECREF(o);
        Py_XDECREF(i);
        Py_XDECREF(d);
    } else {
        PyErr_NoMemory();
    }
    free(out->ids);
    free(out->d);
    free(offsets);
    return result;
}

/* enumerate the k-bit masks of popcount s, s = 0..t, in increasing order (Gosper's hack) */
static Py_ssize_t fill_masks(uint64_t *dst, int k, int t, Py_ssize_t *level_start) {
    Py_ssize_t n = 0;
    for (int s = 0; s <= t; s++) {
        level_start[s] = n;
        if (s == 0) {
            if (dst) dst[n] = 0;
            n++;
            continue;
        }
        if (s > k) continue;
        uint64_t limit = 1ULL << k, v = (1ULL << s) - 1;
        while (v < limit) {
            if (dst) dst[n] = v;
            n++;
            uint64_t c = v & -v, rr = v + c;
            v = (((rr ^ v) >> 2) / c) | rr;
        }
    }
    level_start[t + 1] = n;
    return n;
}

static PyObject *py_probe(PyObject *self, PyObject *args) {
    PyObject *queries_obj, *tables_obj;
    int r, keep_ties, signed_ids;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OOinpp", &queries_obj, &tables_obj, &r, &limit, &keep_ties, &signed_ids))
        return NULL;
    if (r < 0 || r > 64) return PyErr_Format(PyExc_ValueError, "radius %d outside 0..64", r);
    table_t tables[MAX_TABLES];
    int n_tables = 0;
    if (parse_tables(tables_obj, tables, &n_tables) < 0) return NULL;
    Py_buffer qv;
    if (PyObject_GetBuffer(queries_obj, &qv, PyBUF_C_CONTIGUOUS) < 0) {
        release_tables(tables, n_tables);
        return NULL;
    }
    Py_ssize_t n_queries = qv.len / 8;
    const uint64_t *queries = (const uint64_t *)qv.buf;

    int max_t = 0;
    Py_ssize_t mask_start[MAX_TABLES * 66];
    Py_ssize_t level_start[66];
    Py_ssize_t n_masks = 0;
    for (int i = 0; i < n_tables; i++) {
        if (tables[i].t > max_t) max_t = tables[i].t;
        n_masks += fill_masks(NULL, tables[i].k, tables[i].t, level_start);
    }
    uint64_t *masks = malloc((n_masks + 1) * sizeof(uint64_t));
    Py_ssize_t *offsets = malloc((n_queries + 1) * sizeof(Py_ssize_t));
    out_t out = {0};
    found_t f = {0};
    uint64_t *scratch = NULL;
    Py_ssize_t scratch_cap = 0;
    int failed = (masks == NULL || offsets == NULL);
    if (!failed) {
        Py_ssize_t base = 0;
        for (int i = 0; i < n_tables; i++) {
            Py_ssize_t n = fill_masks(masks + base, tables[i].k, tables[i].t, level_start);
            for (int s = 0; s <= tables[i].t + 1; s++) mask_start[i * 66 + s] = base + level_start[s];
            base += n;
        }
        Py_BEGIN_ALLOW_THREADS
        offsets[0] = 0;
        for (Py_ssize_t qi = 0; qi < n_queries && !failed; qi++) {
            f.n = 0;
            if (probe_query(tables, n_tables, masks, mask_start, max_t, queries[qi], r, limit, &f) < 0 ||
                emit_query(&f, r, limit, keep_ties, signed_ids, &out, &scratch, &scratch_cap) < 0)
                failed = 1;
            offsets[qi + 1] = out.n;
        }
        Py_END_ALLOW_THREADS
    }
    free(masks);
    free(f.ids);
    free(f.d);
    free(scratch);
    PyBuffer_Release(&qv);
    release_tables(tables, n_tables);
    if (failed && !offsets) {
        free(out.ids);
        free(out.d);
        return PyErr_NoMemory();
    }
    return finish(&out, offsets, n_queries, failed);
}

static PyObject *py_scan(PyObject *self, PyObject *args) {
    PyObject *queries_obj, *tables_obj;
    int r, keep_ties, signed_ids;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OOinpp", &queries_obj, &tables_obj, &r, &limit, &keep_ties, &signed_ids))
        return NULL;
    if (r < 0 || r > 64) return PyErr_Format(PyExc_ValueError, "radius %d outside 0..64", r);
    table_t tables[MAX_TABLES];
    int n_tables = 0;
    if (parse_tables(tables_obj, tables, &n_tables) < 0) return NULL;
    Py_buffer qv;
    if (PyObject_GetBuffer(queries_obj, &qv, PyBUF_C_CONTIGUOUS) < 0) {
        release_tables(tables, n_tables);
        return NULL;
    }
    Py_ssize_t n_queries = qv.len / 8;
    const uint64_t *queries = (const uint64_t *)qv.buf;
    Py_ssize_t *offsets = malloc((n_queries + 1) * sizeof(Py_ssize_t));
    out_t out = {0};
    found_t f = {0};
    uint64_t *scratch = NULL;
    Py_ssize_t scratch_cap = 0;
    int failed = offsets == NULL;
    if (!failed) {
        Py_BEGIN_ALLOW_THREADS
        offsets[0] = 0;
        for (Py_ssize_t qi = 0; qi < n_queries && !failed; qi++) {
            f.n = 0;
            if (scan_query(&tables[0], queries[qi], r, &f) < 0 ||
                emit_query(&f, r, limit, keep_ties, signed_ids, &out, &scratch, &scratch_cap) < 0)
                failed = 1;
            offsets[qi + 1] = out.n;
        }
        Py_END_ALLOW_THREADS
    }
    free(f.ids);
    free(f.d);
    free(scratch);
    PyBuffer_Release(&qv);
    release_tables(tables, n_tables);
    if (failed && !offsets) return PyErr_NoMemory();
    return finish(&out, offsets, n_queries, failed);
}

/* Counting sort of rows by key: order[i] = the row placed at position i (stable).
 * keys: uint32 (n,), starts: uint64 (2^k + 1,) prefix sums of the key counts. */
static PyObject *py_bucket_order(PyObject *self, PyObject *args) {
    PyObject *keys_obj, *starts_obj, *order_obj;
    if (!PyArg_ParseTuple(args, "OOO", &keys_obj, &starts_obj, &order_obj)) return NULL;
    Py_buffer kv, sv, ov;
    if (PyObject_GetBuffer(keys_obj, &kv, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(starts_obj, &sv, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&kv);
        return NULL;
    }
    if (PyObject_GetBuffer(order_obj, &ov, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&kv);
        PyBuffer_Release(&sv);
        return NULL;
    }
    Py_ssize_t n = kv.len / 4, n_keys = sv.len / 8;
    int ok = ov.len == n * 8;
    const uint32_t *keys = kv.buf;
    uint64_t *next = sv.buf;
    int64_t *order = ov.buf;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            uint32_t key = keys[i];
            if ((Py_ssize_t)key >= n_keys || (Py_ssize_t)next[key] >= n) {
                ok = 0;
                break;
            }
            order[next[key]++] = i;
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&kv);
    PyBuffer_Release(&sv);
    PyBuffer_Release(&ov);
    if (!ok) return PyErr_Format(PyExc_ValueError, "bucket_order: inconsistent keys and starts");
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"probe", py_probe, METH_VARARGS,
     "probe(queries_u64, tables, radius, limit, keep_ties, signed_ids) -> (offsets, ids, distances) bytes"},
    {"scan", py_scan, METH_VARARGS,
     "scan(queries_u64, (table,), radius, limit, keep_ties, signed_ids) -> (offsets, ids, distances) bytes"},
    {"bucket_order", py_bucket_order, METH_VARARGS,
     "bucket_order(keys_u32, starts_u64 (consumed), order_i64 out): stable counting sort"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lookup", "C kernel of semhash.index.lookup", -1, methods};

PyMODINIT_FUNC PyInit__lookup(void) {
#if HAVE_CPU_CHECK
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("popcnt")) {
        PyErr_SetString(PyExc_ImportError, "this CPU has no POPCNT instruction: using the NumPy lookup");
        return NULL;
    }
#endif
    return PyModule_Create(&module);
}
