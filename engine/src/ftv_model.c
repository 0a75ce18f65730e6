/* Loading a .ftv file: validate everything before use, then bind weights in place.
 * Every offset, size and shape is checked against the file size and the header's
 * configuration, and every ternary code is checked, so a damaged file is refused with a
 * message instead of being read out of bounds. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftv_model.h"

#define FTV_MAX_SIDE 65536u /* bound on every dimension: keeps size arithmetic far from overflow */

typedef struct {
    const uint8_t *data;
    size_t size;
    ftv_header h;
    const uint8_t *table;
    char *err;
    size_t errlen;
} loader;

static ftv_status fail(loader *L, ftv_status st, const char *fmt, ...) {
    if (L->err && L->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->err, L->errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

static void read_entry(const loader *L, uint32_t i, ftv_tensor *e) {
    memcpy(e, L->table + (size_t)i * FTV_ENTRY_SIZE, sizeof *e);
}

static int is_ternary(uint32_t kind) { return kind == FTV_KIND_TQ2 || kind == FTV_KIND_TQ1; }

/* Every code of a packed row is valid and the padding after code k encodes 0. */
static int ternary_row_valid(const uint8_t *row, uint32_t row_bytes, uint64_t k, uint32_t kind) {
    for (uint32_t j = 0; j < row_bytes; j++)
        if (kind == FTV_KIND_TQ2 ? ((row[j] & (row[j] >> 1)) & 0x55u) != 0 : row[j] > 242)
            return 0; /* tq2: a 2-bit field equal to 3; tq1: a byte above 3^5 - 1 */
    uint64_t per = kind == FTV_KIND_TQ2 ? 4 : 5;
    for (uint64_t j = k; j < row_bytes * per; j++)
        if (ftv_ternary_get(row, (uint32_t)j, kind) != 0) return 0;
    return 1;
}

/* Check one table entry on its own: name, kind, shape, bounds, size, codes. */
static ftv_status check_entry(loader *L, uint32_t i, const ftv_tensor *e) {
    if (memchr(e->name, 0, FTV_NAME_SIZE) == NULL)
        return fail(L, FTV_ERR_FORMAT, "tensor %u: name is not NUL-terminated", i);
    if (e->kind < FTV_KIND_F32 || e->kind > FTV_KIND_U8)
        return fail(L, FTV_ERR_FORMAT, "tensor '%s': unknown kind %u", e->name, e->kind);
    if (e->ndim < 1 || e->ndim > FTV_MAX_DIMS)
        return fail(L, FTV_ERR_FORMAT, "tensor '%s': ndim %u out of range", e->name, e->ndim);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < e->ndim; d++) {
        if (e->dims[d] == 0 || e->dims[d] > FTV_MAX_SIDE)
            return fail(L, FTV_ERR_FORMAT, "tensor '%s': dim %u = %u out of range", e->name, d, e->dims[d]);
        numel *= e->dims[d];
    }
    uint64_t table_end = (uint64_t)L->h.header_size + (uint64_t)L->h.num_tensors * FTV_ENTRY_SIZE;
    uint64_t data_end = L->size - FTV_CRC_SIZE;
    if (e->offset % L->h.alignment || e->offset < table_end || e->offset > data_end ||
        e->nbytes > data_end - e->offset)
        return fail(L, FTV_ERR_FORMAT, "tensor '%s': data [%llu, +%llu) outside the file", e->name,
                    (unsigned long long)e->offset, (unsigned long long)e->nbytes);
    uint64_t expect;
    if (is_ternary(e->kind)) {
        uint64_t rows = e->ndim == 1 ? 1 : e->dims[0], k = numel / rows;
        uint64_t per = e->kind == FTV_KIND_TQ2 ? 4 : 5;
        if (e->row_bytes != (k + per - 1) / per)
            return fail(L, FTV_ERR_FORMAT, "tensor '%s': row_bytes %u, expected %llu", e->name, e->row_bytes,
                        (unsigned long long)((k + per - 1) / per));
        expect = rows * e->row_bytes;
        if (e->nbytes == expect)
            for (uint64_t r = 0; r < rows; r++)
                if (!ternary_row_valid(L->data + e->offset + r * e->row_bytes, e->row_bytes, k, e->kind))
                    return fail(L, FTV_ERR_FORMAT, "tensor '%s': invalid ternary code in row %llu", e->name,
                                (unsigned long long)r);
    } else {
        expect = numel * (e->kind == FTV_KIND_F32 ? 4u : e->kind == FTV_KIND_F16 ? 2u : 1u);
    }
    if (e->nbytes != expect)
        return fail(L, FTV_ERR_FORMAT, "tensor '%s': %llu bytes, expected %llu", e->name,
                    (unsigned long long)e->nbytes, (unsigned long long)expect);
    return FTV_OK;
}

static int find(const loader *L, const char *name, ftv_tensor *e) {
    for (uint32_t i = 0; i < L->h.num_tensors; i++) {
        read_entry(L, i, e);
        if (strncmp(e->name, name, FTV_NAME_SIZE) == 0) return 1;
    }
    return 0;
}

/* Expected shape of a tensor: dims[0..ndim), trailing zeros. */
static int same_shape(const ftv_tensor *e, uint32_t ndim, const uint32_t *dims) {
    if (e->ndim != ndim) return 0;
    for (uint32_t d = 0; d < ndim; d++) if (e->dims[d] != dims[d]) return 0;
    return 1;
}

static ftv_status bind_f(loader *L, const char *name, uint32_t ndim, const uint32_t *dims, ftv_fvec *v) {
    ftv_tensor e;
    if (!find(L, name, &e)) return fail(L, FTV_ERR_FORMAT, "missing tensor '%s'", name);
    if (e.kind != FTV_KIND_F32 && e.kind != FTV_KIND_F16)
        return fail(L, FTV_ERR_FORMAT, "tensor '%s': kind %u, expected FP32 or FP16", name, e.kind);
    if (!same_shape(&e, ndim, dims)) return fail(L, FTV_ERR_FORMAT, "tensor '%s': wrong shape", name);
    v->data = L->data + e.offset;
    v->is_f16 = e.kind == FTV_KIND_F16;
    v->n = (int)(e.nbytes / (v->is_f16 ? 2u : 4u));
    return FTV_OK;
}

static ftv_status bind_t(loader *L, const char *name, uint32_t rows, uint32_t k, int is_vector, ftv_tmat *m) {
    ftv_tensor e;
    if (!find(L, name, &e)) return fail(L, FTV_ERR_FORMAT, "missing tensor '%s'", name);
    uint32_t want = L->h.format == FTV_FORMAT_TQ2 ? FTV_KIND_TQ2 : FTV_KIND_TQ1;
    if (e.kind != want) return fail(L, FTV_ERR_FORMAT, "tensor '%s': kind %u, expected %u", name, e.kind, want);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < e.ndim; d++) numel *= e.dims[d];
    uint32_t e_rows = e.ndim == 1 ? 1 : e.dims[0];
    if ((is_vector && e.ndim != 1) || e_rows != rows || numel != (uint64_t)rows * k)
        return fail(L, FTV_ERR_FORMAT, "tensor '%s': wrong shape", name);
    m->data = L->data + e.offset;
    m->rows = (int)rows;
    m->k = (int)k;
    m->row_bytes = (int)e.row_bytes;
    m->kind = e.kind;
    m->scale = e.scale;
    m->row_scale.n = 0;
    return FTV_OK;
}

#define TRY(expr) do { ftv_status st_ = (expr); if (st_ != FTV_OK) return st_; } while (0)

static ftv_status bind_ternary_vec(loader *L, const char *name, uint32_t n, ftv_tmat *m) {
    TRY(bind_t(L, name, 1, n, 1, m));
    if (!(m->scale > 0.0f) || !isfinite(m->scale))
        return fail(L, FTV_ERR_FORMAT, "tensor '%s': scale %g is not a positive number", name, (double)m->scale);
    return FTV_OK;
}

static ftv_status bind_linear(loader *L, const char *prefix, uint32_t out, uint32_t in, ftv_fvec *rms, ftv_tmat *w) {
    char name[FTV_NAME_SIZE + 16];
    snprintf(name, sizeof name, "%s.norm.weight", prefix);
    uint32_t d[1] = {in};
    TRY(bind_f(L, name, 1, d, rms));
    snprintf(name, sizeof name, "%s.weight", prefix);
    TRY(bind_t(L, name, out, in, 0, w));
    if (!(w->scale > 0.0f) || !isfinite(w->scale))
        return fail(L, FTV_ERR_FORMAT, "tensor '%s': scale %g is not a positive number", name, (double)w->scale);
    return FTV_OK;
}

static ftv_status bind_norm(loader *L, const char *prefix, uint32_t dim, ftv_tmat *g, ftv_tmat *b) {
    char name[FTV_NAME_SIZE + 16];
    snprintf(name, sizeof name, "%s.weight", prefix);
    TRY(bind_ternary_vec(L, name, dim, g));
    snprintf(name, sizeof name, "%s.bias", prefix);
    return bind_ternary_vec(L, name, dim, b);
}

static ftv_status check_header(loader *L, ftv_model *m) {
    const ftv_header *h = &L->h;
    if (L->size < FTV_HEADER_SIZE + FTV_CRC_SIZE || memcmp(h->magic, FTV_MAGIC, FTV_MAGIC_SIZE) != 0)
        return fail(L, FTV_ERR_FORMAT, "not a .ftv model file (bad magic or too short: %zu bytes)", L->size);
    if (h->version > FTV_VERSION)
        return fail(L, FTV_ERR_VERSION, "format version %u is newer than this engine's (%u): update ftervit",
                    h->version, FTV_VERSION);
    if (h->version < 1 || h->header_size != FTV_HEADER_SIZE || h->entry_size != FTV_ENTRY_SIZE)
        return fail(L, FTV_ERR_FORMAT, "unsupported header (version %u, sizes %u/%u)", h->version,
                    h->header_size, h->entry_size);
    if (h->file_size != L->size)
        return fail(L, FTV_ERR_FORMAT, "file is %zu bytes but its header says %llu (truncated?)", L->size,
                    (unsigned long long)h->file_size);
    uint32_t stored;
    memcpy(&stored, L->data + L->size - FTV_CRC_SIZE, 4);
    if (ftv_crc32(0, L->data, L->size - FTV_CRC_SIZE) != stored)
        return fail(L, FTV_ERR_CHECKSUM, "checksum mismatch: the file is corrupted");
    if (h->num_tensors == 0 || h->num_tensors > 100000u ||
        (uint64_t)FTV_HEADER_SIZE + (uint64_t)h->num_tensors * FTV_ENTRY_SIZE > L->size - FTV_CRC_SIZE)
        return fail(L, FTV_ERR_FORMAT, "tensor table (%u entries) does not fit in the file", h->num_tensors);
    if (h->alignment == 0 || (h->alignment & (h->alignment - 1)))
        return fail(L, FTV_ERR_FORMAT, "alignment %u is not a power of two", h->alignment);
    if (h->format != FTV_FORMAT_TQ2 && h->format != FTV_FORMAT_TQ1)
        return fail(L, FTV_ERR_FORMAT, "unknown weight format %u", h->format);
    const uint32_t dims[] = {h->img_h, h->img_w, h->patch_h, h->patch_w, h->in_chans, h->embed_dim,
                             h->depth, h->num_heads, h->mlp_hidden, h->num_classes};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i] == 0 || dims[i] > FTV_MAX_SIDE) return fail(L, FTV_ERR_FORMAT, "model geometry out of range");
    if (h->in_chans > FTV_MAX_CHANNELS || h->img_h % h->patch_h || h->img_w % h->patch_w ||
        h->embed_dim % h->num_heads || h->depth > 1024)
        return fail(L, FTV_ERR_FORMAT, "inconsistent model geometry");
    if (!(h->ln_eps > 0.0f) || !(h->rms_eps > 0.0f) || !(h->quant_eps > 0.0f) || !isfinite(h->ln_eps) ||
        !isfinite(h->rms_eps) || !isfinite(h->quant_eps))
        return fail(L, FTV_ERR_FORMAT, "epsilons must be positive numbers");
    ftv_config *c = &m->cfg;
    c->img_h = (int)h->img_h;
    c->img_w = (int)h->img_w;
    c->patch_h = (int)h->patch_h;
    c->patch_w = (int)h->patch_w;
    c->in_chans = (int)h->in_chans;
    c->embed_dim = (int)h->embed_dim;
    c->depth = (int)h->depth;
    c->num_heads = (int)h->num_heads;
    c->mlp_hidden = (int)h->mlp_hidden;
    c->num_classes = (int)h->num_classes;
    c->flags = h->flags;
    c->format = h->format;
    for (int i = 0; i < FTV_MAX_CHANNELS; i++) {
        c->mean[i] = h->mean[i];
        c->std[i] = h->std[i];
    }
    m->num_patches = (int)((h->img_h / h->patch_h) * (h->img_w / h->patch_w));
    if (m->num_patches > (int)FTV_MAX_SIDE) return fail(L, FTV_ERR_FORMAT, "too many patches");
    int has_cls = (h->flags & FTV_FLAG_CLASS_TOKEN) != 0;
    c->num_tokens = m->num_patches + has_cls;
    m->pos_len = m->num_patches + (has_cls && !(h->flags & FTV_FLAG_NO_EMBED_CLASS));
    m->head_dim = c->embed_dim / c->num_heads;
    m->ln_eps = h->ln_eps;
    m->rms_eps = h->rms_eps;
    m->quant_eps = h->quant_eps;
    int kp = c->in_chans * c->patch_h * c->patch_w;
    m->max_k = c->embed_dim > c->mlp_hidden ? c->embed_dim : c->mlp_hidden;
    if (kp > m->max_k) m->max_k = kp;
    if ((uint64_t)m->max_k * 128u > 0x7FFFFFFFu) return fail(L, FTV_ERR_FORMAT, "rows too long for int32 sums");
    return FTV_OK;
}

static ftv_status bind_all(loader *L, ftv_model *m) {
    const ftv_config *c = &m->cfg;
    const uint32_t D = (uint32_t)c->embed_dim, H = (uint32_t)c->mlp_hidden;
    const uint32_t kp = (uint32_t)(c->in_chans * c->patch_h * c->patch_w);
    ftv_weights *w = &m->w;
    uint32_t d1[1] = {D};
    TRY(bind_t(L, "patch_embed.proj.weight", D, kp, 0, &w->patch));
    w->patch.scale = 0.0f;
    ftv_tensor e;
    if (!find(L, "patch_embed.proj.weight", &e) || e.ndim != 4 || e.dims[1] != (uint32_t)c->in_chans ||
        e.dims[2] != (uint32_t)c->patch_h || e.dims[3] != (uint32_t)c->patch_w)
        return fail(L, FTV_ERR_FORMAT, "tensor 'patch_embed.proj.weight': wrong shape");
    TRY(bind_f(L, "patch_embed.proj.weight_scale", 1, d1, &w->patch.row_scale));
    for (int r = 0; r < c->embed_dim; r++) {
        float s = ftv_fvec_get(&w->patch.row_scale, r);
        if (!(s > 0.0f) || !isfinite(s)) return fail(L, FTV_ERR_FORMAT, "patch_embed.proj.weight_scale: bad scale");
    }
    TRY(bind_f(L, "patch_embed.proj.channel_scale", 1, d1, &w->patch_cs));
    w->patch_bias.n = 0;
    if (c->flags & FTV_FLAG_PATCH_BIAS) TRY(bind_f(L, "patch_embed.proj.bias", 1, d1, &w->patch_bias));
    w->cls.n = 0;
    uint32_t d3[3] = {1, 1, D};
    if (c->flags & FTV_FLAG_CLASS_TOKEN) TRY(bind_f(L, "cls_token", 3, d3, &w->cls));
    uint32_t dpos[3] = {1, (uint32_t)m->pos_len, D};
    TRY(bind_f(L, "pos_embed", 3, dpos, &w->pos));
    for (int l = 0; l < c->depth; l++) {
        ftv_block *b = &w->blocks[l];
        char p[FTV_NAME_SIZE];
        char q[FTV_NAME_SIZE + 16];
#define PFX(fmt) (snprintf(p, sizeof p, "blocks.%d." fmt, l), p)
        TRY(bind_norm(L, PFX("norm1"), D, &b->norm1_g, &b->norm1_b));
        TRY(bind_linear(L, PFX("attn.qkv"), 3 * D, D, &b->qkv_rms, &b->qkv));
        TRY(bind_linear(L, PFX("attn.proj"), D, D, &b->proj_rms, &b->proj));
        TRY(bind_norm(L, PFX("norm2"), D, &b->norm2_g, &b->norm2_b));
        TRY(bind_linear(L, PFX("mlp.fc1"), H, D, &b->fc1_rms, &b->fc1));
        TRY(bind_linear(L, PFX("mlp.fc2"), D, H, &b->fc2_rms, &b->fc2));
        b->ls1.n = b->ls2.n = 0;
        if (c->flags & FTV_FLAG_LAYER_SCALE) {
            snprintf(q, sizeof q, "blocks.%d.ls1.gamma", l);
            TRY(bind_f(L, q, 1, d1, &b->ls1));
            snprintf(q, sizeof q, "blocks.%d.ls2.gamma", l);
            TRY(bind_f(L, q, 1, d1, &b->ls2));
        }
#undef PFX
    }
    w->norm_g.rows = w->fcn_g.rows = 0;
    if (c->flags & FTV_FLAG_FINAL_NORM) TRY(bind_norm(L, "norm", D, &w->norm_g, &w->norm_b));
    if (c->flags & FTV_FLAG_FC_NORM) TRY(bind_norm(L, "fc_norm", D, &w->fcn_g, &w->fcn_b));
    TRY(bind_linear(L, "head", (uint32_t)c->num_classes, D, &w->head_rms, &w->head));
    return FTV_OK;
}

static ftv_status bind_class_names(loader *L, ftv_model *m) {
    ftv_tensor e;
    if (!(m->cfg.flags & FTV_FLAG_CLASS_NAMES)) return FTV_OK;
    if (!find(L, "class_names", &e) || e.kind != FTV_KIND_U8)
        return fail(L, FTV_ERR_FORMAT, "missing tensor 'class_names'");
    m->class_names = (const char **)calloc((size_t)m->cfg.num_classes, sizeof(char *));
    if (!m->class_names) return fail(L, FTV_ERR_NOMEM, "out of memory");
    const char *p = (const char *)(L->data + e.offset), *end = p + e.nbytes;
    for (int i = 0; i < m->cfg.num_classes; i++) {
        const char *nul = memchr(p, 0, (size_t)(end - p));
        if (!nul) return fail(L, FTV_ERR_FORMAT, "class_names holds fewer than %d names", m->cfg.num_classes);
        m->class_names[i] = p;
        p = nul + 1;
    }
    return FTV_OK;
}

/* Repacks one tensor at dst (or only sizes it when dst is NULL); returns its aligned size. */
static size_t repack_one(const ftv_kernels *k, ftv_tmat *t, int values, uint8_t *dst) {
    size_t bytes = k->repack(t, values, NULL);
    if (dst && bytes && k->repack(t, values, dst) == bytes) t->repack = dst;
    return (bytes + 63u) & ~(size_t)63u;
}

/* The kernels' own copies of the ternary tensors (AVX2: every matrix in its 2-bit layout,
 * every LayerNorm vector as floats), one after the other from dst; returns their size. */
static size_t repack_all(ftv_model *m, uint8_t *dst) {
    enum { MATRIX = 0, VALUES = 1 };
    ftv_weights *w = &m->w;
    size_t off = 0;
#define ONE(t, v) (off += repack_one(m->kernels, (t), (v), dst ? dst + off : NULL))
    ONE(&w->patch, MATRIX);
    ONE(&w->head, MATRIX);
    if (w->norm_g.rows) ONE(&w->norm_g, VALUES), ONE(&w->norm_b, VALUES);
    if (w->fcn_g.rows) ONE(&w->fcn_g, VALUES), ONE(&w->fcn_b, VALUES);
    for (int l = 0; l < m->cfg.depth; l++) {
        ftv_block *b = &w->blocks[l];
        ONE(&b->norm1_g, VALUES), ONE(&b->norm1_b, VALUES), ONE(&b->qkv, MATRIX), ONE(&b->proj, MATRIX);
        ONE(&b->norm2_g, VALUES), ONE(&b->norm2_b, VALUES), ONE(&b->fc1, MATRIX), ONE(&b->fc2, MATRIX);
    }
#undef ONE
    return off;
}

static ftv_status repack_weights(loader *L, ftv_model *m) {
    size_t total = repack_all(m, NULL);
    if (total == 0) return FTV_OK; /* scalar kernels: the file's codes, read in place */
    m->repacked = malloc(total + 64);
    if (!m->repacked) return fail(L, FTV_ERR_NOMEM, "cannot allocate %zu bytes of repacked weights", total);
    m->repacked_bytes = total;
    repack_all(m, (uint8_t *)(((uintptr_t)m->repacked + 63u) & ~(uintptr_t)63u));
    return FTV_OK;
}

/* (Re)allocate the arena for n threads; on failure the model keeps the arena it had. */
static ftv_status layout_arena(ftv_model *m, int n) {
    const int old_threads = m->threads, old_tile = m->mlp_tile;
    m->threads = n;
    const size_t bytes = ftv_state_layout(m, NULL); /* also sets mlp_tile */
    ftv_thread_state *ts = (ftv_thread_state *)calloc((size_t)n, sizeof *ts);
    /* zeroed: the padding columns of the transposed keys are read (and their scores unused) */
    void *arena = calloc(1, bytes + 64);
    if (!ts || !arena) {
        free(ts);
        free(arena);
        m->threads = old_threads;
        m->mlp_tile = old_tile;
        return FTV_ERR_NOMEM;
    }
    free(m->ts);
    free(m->arena);
    m->ts = ts;
    m->arena = arena;
    m->arena_bytes = bytes;
    ftv_state_layout(m, (void *)(((uintptr_t)arena + 63u) & ~(uintptr_t)63u));
    return FTV_OK;
}

static ftv_status load(loader *L, ftv_model *m) {
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) return fail(L, FTV_ERR_FORMAT, "big-endian hosts are not supported");
    if (L->size >= FTV_HEADER_SIZE) memcpy(&L->h, L->data, sizeof L->h);
    else memset(&L->h, 0, sizeof L->h);
    TRY(check_header(L, m));
    L->table = L->data + FTV_HEADER_SIZE;
    for (uint32_t i = 0; i < L->h.num_tensors; i++) {
        ftv_tensor e;
        read_entry(L, i, &e);
        TRY(check_entry(L, i, &e));
    }
    m->w.blocks = (ftv_block *)calloc((size_t)m->cfg.depth, sizeof(ftv_block));
    if (!m->w.blocks) return fail(L, FTV_ERR_NOMEM, "out of memory");
    TRY(bind_all(L, m));
    TRY(bind_class_names(L, m));
    m->kernels = ftv_kernels_select();
    TRY(repack_weights(L, m));
    m->ldk = (m->cfg.num_tokens + 7) & ~7;
    if (layout_arena(m, 1) != FTV_OK) return fail(L, FTV_ERR_NOMEM, "cannot allocate the arena");
    return FTV_OK;
}

ftv_status ftv_model_load_buffer(const void *data, size_t size, ftv_model **out, char *err, size_t errlen) {
    if (err && errlen) err[0] = '\0';
    if (!data || !out) return FTV_ERR_ARG;
    *out = NULL;
    ftv_model *m = (ftv_model *)calloc(1, sizeof *m);
    if (!m) return FTV_ERR_NOMEM;
    loader L = {.data = (const uint8_t *)data, .size = size, .err = err, .errlen = errlen};
    ftv_status st = load(&L, m);
    if (st != FTV_OK) {
        ftv_model_free(m);
        return st;
    }
    *out = m;
    return FTV_OK;
}

ftv_status ftv_model_load_file(const char *path, ftv_model **out, char *err, size_t errlen) {
    loader L = {.err = err, .errlen = errlen};
    if (!path || !out) return FTV_ERR_ARG;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return fail(&L, FTV_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    errno = 0; /* a directory opens on POSIX systems but does not read: ask before sizing it */
    if (fgetc(f) == EOF && ferror(f)) {
        const char *why = errno ? strerror(errno) : "read error";
        fclose(f);
        return fail(&L, FTV_ERR_IO, "cannot read %s: %s", path, why);
    }
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    uint8_t *buf = size > 0 ? (uint8_t *)malloc((size_t)size) : NULL;
    int ok = buf && fseek(f, 0, SEEK_SET) == 0 && fread(buf, 1, (size_t)size, f) == (size_t)size;
    fclose(f);
    if (!ok) {
        free(buf);
        return fail(&L, size > 0 && !buf ? FTV_ERR_NOMEM : FTV_ERR_IO, "cannot read %s%s", path,
                    size == 0 ? ": the file is empty" : size > 0 && !buf ? ": out of memory" : "");
    }
    ftv_status st = ftv_model_load_buffer(buf, (size_t)size, out, err, errlen);
    if (st != FTV_OK) {
        free(buf);
        return st;
    }
    (*out)->owned_file = buf;
    return FTV_OK;
}

ftv_status ftv_model_set_threads(ftv_model *m, int n) {
    if (!m || n < 1 || n > FTV_MAX_THREADS) return FTV_ERR_ARG;
    if (n == m->threads) return FTV_OK;
    ftv_pool *pool;
    if (ftv_pool_create(n, &pool) != 0) return n > 1 && !FTV_HAVE_THREADS ? FTV_ERR_ARG : FTV_ERR_NOMEM;
    if (layout_arena(m, n) != FTV_OK) {
        ftv_pool_free(pool);
        return FTV_ERR_NOMEM;
    }
    ftv_pool_free(m->pool);
    m->pool = pool;
    return FTV_OK;
}

int ftv_model_threads(const ftv_model *m) { return m->threads; }

ftv_status ftv_model_set_numerics(ftv_model *m, ftv_numerics mode) {
    if (!m || (mode != FTV_NUMERICS_EXACT && mode != FTV_NUMERICS_FAST)) return FTV_ERR_ARG;
    const ftv_kernels *exact = m->kernels->exact;
    const ftv_kernels *want = mode == FTV_NUMERICS_FAST ? ftv_kernels_fast(exact) : exact;
    if (!want) return FTV_ERR_ARG; /* no fast variant: the scalar sets */
    if (want == m->kernels) return FTV_OK;
    const ftv_kernels *old = m->kernels; /* the fast attention may need other scratch: lay out again */
    m->kernels = want;
    if (layout_arena(m, m->threads) != FTV_OK) {
        m->kernels = old;
        return FTV_ERR_NOMEM;
    }
    return FTV_OK;
}

ftv_numerics ftv_model_numerics(const ftv_model *m) { return m->kernels->fast ? FTV_NUMERICS_FAST : FTV_NUMERICS_EXACT; }

const char *ftv_model_kernels(const ftv_model *m) { return m->kernels->name; }

size_t ftv_model_repacked_bytes(const ftv_model *m) { return m->repacked_bytes; }

void ftv_model_free(ftv_model *m) {
    if (!m) return;
    ftv_pool_free(m->pool);
    free(m->ts);
    free(m->repacked);
    free(m->w.blocks);
    free(m->arena);
    free((void *)m->class_names);
    free(m->owned_file);
    free(m);
}

const ftv_config *ftv_model_config(const ftv_model *m) { return &m->cfg; }

size_t ftv_model_arena_bytes(const ftv_model *m) { return m->arena_bytes; }

const char *ftv_model_class_name(const ftv_model *m, int i) {
    if (!m->class_names || i < 0 || i >= m->cfg.num_classes) return NULL;
    return m->class_names[i];
}

const char *ftv_status_string(ftv_status s) {
    switch (s) {
    case FTV_OK: return "ok";
    case FTV_ERR_IO: return "i/o error";
    case FTV_ERR_FORMAT: return "invalid model file";
    case FTV_ERR_VERSION: return "unsupported format version";
    case FTV_ERR_CHECKSUM: return "checksum mismatch";
    case FTV_ERR_NOMEM: return "out of memory";
    case FTV_ERR_ARG: return "invalid argument";
    }
    return "unknown error";
}
