/* Loading a .ftv file: validate everything before use, then bind weights in place.
 *
 * The checks are those of the Python reader (src/ftervit/export/reader.py), in the same
 * order and with the same messages: header, then every table entry against the tensor table
 * of ftv_tensors.h (name, kind, shape, size, scale, offset), then every tensor's data (ternary
 * codes and padding, finite floats in range, class names). Sizes are computed in 64 bits from
 * values the limits of ftv_format.h bound, so no computation can overflow; only then are the
 * weights bound, by the same table. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftv_model.h"
#include "ftv_rollout.h"
#include "ftv_tensors.h"

#define FLAGS_KNOWN ((uint32_t)FTV_FLAG_CLASS_NAMES * 2u - 1u) /* every flag bit version 1 defines */

typedef struct {
    const uint8_t *data;
    size_t size;
    ftv_header h;
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

#define TRY(expr) do { ftv_status st_ = (expr); if (st_ != FTV_OK) return st_; } while (0)

/* --- the tensor table ------------------------------------------------------------------ */

#define STEM_OR_HEAD(...) FTV_TENSOR_RULE(ftv_weights, __VA_ARGS__)
#define BLOCK(...) FTV_TENSOR_RULE(ftv_block, __VA_ARGS__)
static const ftv_tensor_rule stem_rules[] = {FTV_TENSORS_STEM(STEM_OR_HEAD)};
static const ftv_tensor_rule block_rules[] = {FTV_TENSORS_BLOCK(BLOCK)};
static const ftv_tensor_rule head_rules[] = {FTV_TENSORS_HEAD(STEM_OR_HEAD)};

/* Each row's field has the type its group binds to. */
#define SLOT_TYPE_OK(owner, name, group, flag, d0, d1, d2, d3, field)                             \
    _Static_assert(_Generic(((owner *)0)->field,                                                  \
                            ftv_tmat: FTV_GROUP_##group == FTV_GROUP_TERNARY ||                   \
                                          FTV_GROUP_##group == FTV_GROUP_TERNARY_ROWS,            \
                            ftv_fvec: FTV_GROUP_##group == FTV_GROUP_FLOAT ||                     \
                                          FTV_GROUP_##group == FTV_GROUP_ROW_SCALE,               \
                            ftv_blob: FTV_GROUP_##group == FTV_GROUP_CLASS_NAMES, default: 0),    \
                   "field of " name " has the wrong type");
#define STEM_OR_HEAD_OK(...) SLOT_TYPE_OK(ftv_weights, __VA_ARGS__)
#define BLOCK_OK(...) SLOT_TYPE_OK(ftv_block, __VA_ARGS__)
FTV_TENSORS_STEM(STEM_OR_HEAD_OK)
FTV_TENSORS_BLOCK(BLOCK_OK)
FTV_TENSORS_HEAD(STEM_OR_HEAD_OK)

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Walks the tensors a header implies, in file order. */
typedef struct {
    int part;       /* 0 stem, 1 blocks, 2 head, 3 done */
    uint32_t block; /* during part 1 */
    size_t row;
} cursor;

/* The next tensor of the file, or NULL after the last (header.depth >= 1: check_header). */
static const ftv_tensor_rule *next_tensor(const ftv_header *h, cursor *c) {
    static const ftv_tensor_rule *const parts[3] = {stem_rules, block_rules, head_rules};
    static const size_t sizes[3] = {COUNT(stem_rules), COUNT(block_rules), COUNT(head_rules)};
    while (c->part < 3) {
        if (c->row < sizes[c->part]) {
            const ftv_tensor_rule *r = &parts[c->part][c->row++];
            if (r->flag == 0 || (h->flags & r->flag)) return r;
        } else if (c->part == 1 && ++c->block < h->depth) {
            c->row = 0; /* the next block */
        } else {
            c->part++;
            c->row = 0;
        }
    }
    return NULL;
}

static void tensor_name(const ftv_tensor_rule *r, const cursor *c, char *out, size_t n) {
    if (c->part == 1) snprintf(out, n, "blocks.%u.%s", (unsigned)c->block, r->name);
    else snprintf(out, n, "%s", r->name);
}

static uint64_t pos_len(const ftv_header *h) {
    const int cls = (h->flags & FTV_FLAG_CLASS_TOKEN) != 0, embed_cls = cls && !(h->flags & FTV_FLAG_NO_EMBED_CLASS);
    return (uint64_t)(h->img_h / h->patch_h) * (h->img_w / h->patch_w) + (uint64_t)embed_cls;
}

static uint32_t dim_value(const ftv_header *h, uint8_t sym) {
    switch (sym) {
    case FTV_DIM_1: return 1;
    case FTV_DIM_D: return h->embed_dim;
    case FTV_DIM_D3: return 3u * h->embed_dim;
    case FTV_DIM_H: return h->mlp_hidden;
    case FTV_DIM_CLASSES: return h->num_classes;
    case FTV_DIM_CHANS: return h->in_chans;
    case FTV_DIM_PATCH_H: return h->patch_h;
    case FTV_DIM_PATCH_W: return h->patch_w;
    case FTV_DIM_POS: return (uint32_t)pos_len(h);
    }
    return 0;
}

/* --- message pieces, printed as the Python reader prints them ----------------------------- */

static const char *kind_name(uint32_t kind) {
    static const char *const names[] = {"?", "F32", "F16", "TQ2", "TQ1", "U8"};
    return kind <= FTV_KIND_U8 ? names[kind] : "?";
}

/* A float as Python's f"{v:.9g}" (every NaN as "nan"). */
static const char *fmt_g(float v, char *buf, size_t n) {
    if (isnan(v)) snprintf(buf, n, "nan");
    else snprintf(buf, n, "%.9g", (double)v);
    return buf;
}

/* A Python tuple of ints: "(1, 2)", "(3,)". */
static const char *fmt_shape(uint32_t ndim, const uint32_t *dims, char *buf, size_t n) {
    size_t at = (size_t)snprintf(buf, n, "(");
    for (uint32_t d = 0; d < ndim && at < n; d++)
        at += (size_t)snprintf(buf + at, n - at, d ? ", %u" : "%u", dims[d]);
    if (at < n) snprintf(buf + at, n - at, ndim == 1 ? ",)" : ")");
    return buf;
}

/* Name bytes: printable ASCII as is, anything else as \xNN (a forged name stays one line). */
static const char *fmt_name(const char *name, size_t len, char *buf, size_t n) {
    size_t at = 0;
    for (size_t i = 0; i < len && at + 5 < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch >= 0x20 && ch < 0x7F && ch != '\\' && ch != '\'') buf[at++] = (char)ch;
        else at += (size_t)snprintf(buf + at, n - at, "\\x%02x", ch);
    }
    buf[at] = '\0';
    return buf;
}

/* Strict UTF-8, as Python's decoder: no overlong forms, surrogates or code points past U+10FFFF. */
static int utf8_valid(const uint8_t *s, uint64_t n) {
    for (uint64_t i = 0; i < n;) {
        const uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        uint32_t len, cp, min;
        if ((c & 0xE0u) == 0xC0u) len = 2, cp = c & 0x1Fu, min = 0x80;
        else if ((c & 0xF0u) == 0xE0u) len = 3, cp = c & 0x0Fu, min = 0x800;
        else if ((c & 0xF8u) == 0xF0u) len = 4, cp = c & 0x07u, min = 0x10000;
        else return 0;
        if (n - i < len) return 0;
        for (uint32_t j = 1; j < len; j++) {
            if ((s[i + j] & 0xC0u) != 0x80u) return 0;
            cp = cp << 6 | (s[i + j] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFFu || (cp >= 0xD800u && cp <= 0xDFFFu)) return 0;
        i += len;
    }
    return 1;
}

/* --- the header ------------------------------------------------------------------------ */

/* Append to a list of items in buf, `sep` between them. */
static void append(char *buf, size_t n, size_t *at, const char *sep, const char *fmt, ...) {
    if (*at >= n) return;
    if (*at) *at += (size_t)snprintf(buf + *at, n - *at, "%s", sep);
    if (*at >= n) return;
    va_list ap;
    va_start(ap, fmt);
    *at += (size_t)vsnprintf(buf + *at, n - *at, fmt, ap);
    va_end(ap);
}

static ftv_status check_header(loader *L) {
    const size_t n = L->size;
    if (n == 0) return fail(L, FTV_ERR_FORMAT, "empty file");
    if (memcmp(L->data, FTV_MAGIC, n < FTV_MAGIC_SIZE ? n : FTV_MAGIC_SIZE) != 0)
        return fail(L, FTV_ERR_FORMAT, "not an FTerViT .ftv file (bad magic bytes)");
    if (n < FTV_HEADER_SIZE)
        return fail(L, FTV_ERR_FORMAT, "truncated: %zu bytes, shorter than the %d-byte header", n, FTV_HEADER_SIZE);
    memcpy(&L->h, L->data, sizeof L->h);
    const ftv_header *h = &L->h;
    if (h->version > FTV_VERSION)
        return fail(L, FTV_ERR_VERSION, "format version %u is newer than this ftervit reads (version %u); "
                    "upgrade ftervit", h->version, FTV_VERSION);
    if (h->version < 1 || h->header_size != FTV_HEADER_SIZE || h->entry_size != FTV_ENTRY_SIZE)
        return fail(L, FTV_ERR_FORMAT, "bad header (version %u, header size %u, entry size %u)", h->version,
                    h->header_size, h->entry_size);
    if (h->file_size != n)
        return fail(L, FTV_ERR_FORMAT, "%s: the header says %llu bytes, the file has %zu",
                    n < h->file_size ? "truncated" : "has trailing bytes", (unsigned long long)h->file_size, n);
    uint32_t stored;
    memcpy(&stored, L->data + n - FTV_CRC_SIZE, 4);
    const uint32_t actual = ftv_crc32(0, L->data, n - FTV_CRC_SIZE);
    if (stored != actual)
        return fail(L, FTV_ERR_CHECKSUM, "checksum mismatch (stored CRC32 %08x, computed %08x): the file is "
                    "damaged; export it again", stored, actual);
    if (h->format != FTV_FORMAT_TQ2 && h->format != FTV_FORMAT_TQ1)
        return fail(L, FTV_ERR_FORMAT, "unknown weight format code %u", h->format);
    if (h->flags & ~FLAGS_KNOWN) return fail(L, FTV_ERR_FORMAT, "unknown flag bits %#x", h->flags);
    if (h->alignment < 32 || (h->alignment & (h->alignment - 1)))
        return fail(L, FTV_ERR_FORMAT, "alignment %u is not a power of two of at least 32", h->alignment);

    static const char *const names[] = {"img_h", "img_w", "patch_h", "patch_w", "in_chans", "embed_dim",
                                        "depth", "num_heads", "mlp_hidden", "num_classes"};
    const uint32_t sizes[] = {h->img_h, h->img_w, h->patch_h, h->patch_w, h->in_chans, h->embed_dim,
                              h->depth, h->num_heads, h->mlp_hidden, h->num_classes};
    const uint32_t limits[] = {FTV_MAX_IMG_SIDE, FTV_MAX_IMG_SIDE, FTV_MAX_DIM, FTV_MAX_DIM, FTV_MAX_DIM,
                               FTV_MAX_DIM, FTV_MAX_DEPTH, FTV_MAX_DIM, FTV_MAX_DIM, FTV_MAX_DIM};
    char list[512];
    size_t at = 0;
#define OVER(...) append(list, sizeof list, &at, ", ", __VA_ARGS__)
    int zero = 0;
    for (size_t i = 0; i < COUNT(sizes); i++) zero |= sizes[i] == 0;
    if (zero) {
        for (size_t i = 0; i < COUNT(sizes); i++)
            at += (size_t)snprintf(list + at, sizeof list - at, "%s%s=%u", i ? ", " : "", names[i], sizes[i]);
        return fail(L, FTV_ERR_FORMAT, "a model dimension is 0: %s", list);
    }
    for (size_t i = 0; i < COUNT(sizes); i++)
        if (sizes[i] > limits[i]) OVER("%s=%u (at most %u)", names[i], sizes[i], limits[i]);
    if (at == 0) { /* every dimension is bounded: these products fit easily in 64 bits */
        const uint64_t k = (uint64_t)h->in_chans * h->patch_h * h->patch_w;
        const uint64_t tokens = (uint64_t)(h->img_h / h->patch_h) * (h->img_w / h->patch_w) +
                                ((h->flags & FTV_FLAG_CLASS_TOKEN) != 0);
        uint64_t width = h->embed_dim > h->mlp_hidden ? h->embed_dim : h->mlp_hidden;
        if (k > width) width = k;
        if (k > FTV_MAX_DIM) OVER("in_chans*patch_h*patch_w=%llu (at most %u)", (unsigned long long)k, FTV_MAX_DIM);
        if (tokens > FTV_MAX_TOKENS) OVER("tokens=%llu (at most %u)", (unsigned long long)tokens, FTV_MAX_TOKENS);
        if (tokens * width > FTV_MAX_ACTIVATIONS)
            OVER("tokens*width=%llu (at most %u)", (unsigned long long)(tokens * width), FTV_MAX_ACTIVATIONS);
    }
#undef OVER
    if (at) return fail(L, FTV_ERR_FORMAT, "model geometry out of range: %s", list);

    char problems[512], a[32], b[32], c[32];
    at = 0;
#define PROBLEM(...) append(problems, sizeof problems, &at, "; ", __VA_ARGS__)
    if (h->img_h % h->patch_h || h->img_w % h->patch_w) PROBLEM("image size is not a multiple of the patch size");
    if (h->embed_dim % h->num_heads) PROBLEM("embed_dim is not a multiple of num_heads");
    int slots = h->in_chans > FTV_MAX_CHANNELS;
    for (uint32_t i = h->in_chans; i < FTV_MAX_CHANNELS; i++) slots |= h->mean[i] != 0.0f || h->std[i] != 0.0f;
    if (slots) PROBLEM("in_chans %u and the mean/std slots disagree", h->in_chans);
    int stats = 1;
    for (uint32_t i = 0; i < FTV_MAX_CHANNELS; i++) {
        stats &= fabsf(h->mean[i]) <= FTV_MAX_ABS_MEAN;
        if (i < h->in_chans) stats &= h->std[i] >= FTV_MIN_STD && h->std[i] <= FTV_MAX_STD;
    }
    if (!stats)
        PROBLEM("input mean/std out of range (|mean| <= %s, %s <= std <= %s)", fmt_g(FTV_MAX_ABS_MEAN, a, sizeof a),
                fmt_g(FTV_MIN_STD, b, sizeof b), fmt_g(FTV_MAX_STD, c, sizeof c));
    const float eps[3] = {h->ln_eps, h->rms_eps, h->quant_eps};
    int eps_ok = 1;
    for (int i = 0; i < 3; i++) eps_ok &= eps[i] >= FTV_MIN_EPS && eps[i] <= FTV_MAX_EPS;
    if (!eps_ok) PROBLEM("an epsilon is outside [%s, %s]", fmt_g(FTV_MIN_EPS, a, sizeof a), fmt_g(FTV_MAX_EPS, b, sizeof b));
    if (!(h->flags & (FTV_FLAG_AVG_POOL | FTV_FLAG_CLASS_TOKEN))) PROBLEM("token pooling without a class token");
    int reserved = 0;
    for (size_t i = 0; i < sizeof h->reserved; i++) reserved |= h->reserved[i];
    if (reserved) PROBLEM("reserved header bytes are not zero");
#undef PROBLEM
    if (at) return fail(L, FTV_ERR_FORMAT, "inconsistent header: %s", problems);
    return FTV_OK;
}

/* --- the table ------------------------------------------------------------------------- */

static int is_ternary(uint32_t group) { return group == FTV_GROUP_TERNARY || group == FTV_GROUP_TERNARY_ROWS; }

static void read_entry(const loader *L, uint32_t i, ftv_tensor *e) {
    memcpy(e, L->data + FTV_HEADER_SIZE + (size_t)i * FTV_ENTRY_SIZE, sizeof *e);
}

/* (rows, codes or values per row) of a tensor: dim 0 is the row; a 1-D tensor is one row. */
static void rows_and_k(const ftv_tensor *e, uint64_t *rows, uint64_t *k) {
    *rows = e->ndim == 1 ? 1 : e->dims[0];
    *k = 1;
    for (uint32_t d = e->ndim == 1 ? 0 : 1; d < e->ndim; d++) *k *= e->dims[d];
}

static uint64_t codes_per_byte(uint32_t kind) { return kind == FTV_KIND_TQ2 ? 4 : 5; }

/* Entry i, which the table says is rule r named `name`: everything but its data. */
static ftv_status check_entry(loader *L, uint32_t i, const ftv_tensor_rule *r, const char *name,
                              const ftv_tensor *e, uint64_t *prev_end) {
    const ftv_header *h = &L->h;
    char buf[256], buf2[128], buf3[32];
    const char *nul = memchr(e->name, 0, FTV_NAME_SIZE);
    int malformed = nul == NULL || nul == e->name || e->ndim < 1 || e->ndim > FTV_MAX_DIMS;
    for (const char *p = nul ? nul : e->name + FTV_NAME_SIZE; p < e->name + FTV_NAME_SIZE; p++) malformed |= *p != 0;
    for (uint32_t d = e->ndim; !malformed && d < FTV_MAX_DIMS; d++) malformed |= e->dims[d] != 0;
    if (malformed) return fail(L, FTV_ERR_FORMAT, "tensor table entry %u is malformed (name or shape)", i);
    const size_t len = (size_t)(nul - e->name);
    if (!utf8_valid((const uint8_t *)e->name, len))
        return fail(L, FTV_ERR_FORMAT, "tensor table entry %u: name is not UTF-8", i);
    if (strcmp(e->name, name) != 0)
        return fail(L, FTV_ERR_FORMAT, "tensor %u is '%s' where '%s' is expected", i,
                    fmt_name(e->name, len, buf, sizeof buf), name);
    if (e->kind < FTV_KIND_F32 || e->kind > FTV_KIND_U8)
        return fail(L, FTV_ERR_FORMAT, "tensor %s: unknown kind code %u", name, e->kind);

    const uint32_t tkind = h->format == FTV_FORMAT_TQ2 ? FTV_KIND_TQ2 : FTV_KIND_TQ1;
    const int ternary = is_ternary(r->group);
    int kind_ok;
    const char *allowed;
    if (ternary) kind_ok = e->kind == tkind, allowed = kind_name(tkind);
    else if (r->group == FTV_GROUP_ROW_SCALE) kind_ok = e->kind == FTV_KIND_F32, allowed = "F32";
    else if (r->group == FTV_GROUP_CLASS_NAMES) kind_ok = e->kind == FTV_KIND_U8, allowed = "U8";
    else kind_ok = e->kind == FTV_KIND_F16 || e->kind == FTV_KIND_F32, allowed = "F16/F32";
    if (!kind_ok)
        return fail(L, FTV_ERR_FORMAT, "tensor %s: kind %s where %s is expected", name, kind_name(e->kind), allowed);
    if (r->group == FTV_GROUP_CLASS_NAMES) {
        if (e->ndim != 1) return fail(L, FTV_ERR_FORMAT, "tensor %s: must be 1-D", name);
    } else {
        uint32_t want[FTV_MAX_DIMS], ndim = 0;
        while (ndim < FTV_MAX_DIMS && r->dims[ndim] != FTV_DIM_NONE) {
            want[ndim] = dim_value(h, r->dims[ndim]);
            ndim++;
        }
        int same = e->ndim == ndim;
        for (uint32_t d = 0; same && d < ndim; d++) same = e->dims[d] == want[d];
        if (!same)
            return fail(L, FTV_ERR_FORMAT, "tensor %s: shape %s, the header's configuration implies %s", name,
                        fmt_shape(e->ndim, e->dims, buf, sizeof buf), fmt_shape(ndim, want, buf2, sizeof buf2));
    }
    /* the shape is the header's (each dim <= FTV_MAX_DIM) or 1-D: these products fit in 64 bits */
    uint64_t rows, k;
    rows_and_k(e, &rows, &k);
    const uint64_t row_bytes = ternary ? (k + codes_per_byte(e->kind) - 1) / codes_per_byte(e->kind) : 0;
    const uint64_t expect = ternary ? rows * row_bytes : rows * k * (e->kind == FTV_KIND_F32 ? 4u : e->kind == FTV_KIND_F16 ? 2u : 1u);
    if (e->nbytes != expect)
        return fail(L, FTV_ERR_FORMAT, "tensor %s: %llu bytes where its shape needs %llu", name,
                    (unsigned long long)e->nbytes, (unsigned long long)expect);
    if (e->row_bytes != row_bytes) return fail(L, FTV_ERR_FORMAT, "tensor %s: wrong row_bytes %u", name, e->row_bytes);
    if (r->group == FTV_GROUP_TERNARY) {
        if (!(e->scale >= FTV_MIN_SCALE && e->scale <= FTV_MAX_SCALE))
            return fail(L, FTV_ERR_FORMAT, "tensor %s: scale %s outside [%s, %s]", name, fmt_g(e->scale, buf, sizeof buf),
                        fmt_g(FTV_MIN_SCALE, buf2, sizeof buf2), fmt_g(FTV_MAX_SCALE, buf3, sizeof buf3));
    } else if (e->scale != 0.0f) {
        return fail(L, FTV_ERR_FORMAT, "tensor %s: scale %s where 0 is expected", name, fmt_g(e->scale, buf, sizeof buf));
    }
    const uint64_t end = h->file_size - FTV_CRC_SIZE;
    if (e->offset % h->alignment || e->offset < *prev_end || e->offset > end || e->nbytes > end - e->offset)
        return fail(L, FTV_ERR_FORMAT, "tensor %s: data offset %llu (+%llu bytes) is misaligned, overlaps or runs "
                    "past the end", name, (unsigned long long)e->offset, (unsigned long long)e->nbytes);
    *prev_end = e->offset + e->nbytes;
    return FTV_OK;
}

static float value_at(const uint8_t *p, uint32_t kind, uint64_t i) {
    if (kind == FTV_KIND_F16) {
        uint16_t v;
        memcpy(&v, p + 2 * i, 2);
        return ftv_f16_to_f32(v);
    }
    float v;
    memcpy(&v, p + 4 * i, 4);
    return v;
}

/* The data of entry e (rule r), whose metadata check_entry has accepted. */
static ftv_status check_data(loader *L, const ftv_tensor_rule *r, const char *name, const ftv_tensor *e) {
    const uint8_t *p = L->data + e->offset;
    char a[32], b[32], c[32];
    if (is_ternary(r->group)) {
        for (uint64_t j = 0; j < e->nbytes; j++)
            if (e->kind == FTV_KIND_TQ2 ? ((p[j] & (p[j] >> 1)) & 0x55u) != 0 : p[j] > 242)
                return fail(L, FTV_ERR_FORMAT, e->kind == FTV_KIND_TQ2 ? "tensor %s: invalid tq2 code 3 in ternary data"
                            : "tensor %s: invalid tq1 byte (above 242) in ternary data", name);
        uint64_t rows, k;
        rows_and_k(e, &rows, &k);
        for (uint64_t row = 0; row < rows; row++)
            for (uint64_t j = k; j < (uint64_t)e->row_bytes * codes_per_byte(e->kind); j++)
                if (ftv_ternary_get(p + row * e->row_bytes, (uint32_t)j, e->kind) != 0)
                    return fail(L, FTV_ERR_FORMAT, "tensor %s: row padding of ternary data does not encode 0", name);
        return FTV_OK;
    }
    if (e->kind == FTV_KIND_U8) { /* class_names */
        const uint32_t classes = L->h.num_classes;
        uint64_t names = 0;
        int empty = 0;
        for (uint64_t j = 0; j < e->nbytes; j++)
            if (p[j] == 0) names++, empty |= j == 0 || p[j - 1] == 0;
        if (e->nbytes == 0 || p[e->nbytes - 1] != 0 || names != classes || empty)
            return fail(L, FTV_ERR_FORMAT, "class_names does not hold %u NUL-terminated names", classes);
        if (!utf8_valid(p, e->nbytes)) return fail(L, FTV_ERR_FORMAT, "class_names is not UTF-8");
        return FTV_OK;
    }
    const uint64_t n = e->nbytes / (e->kind == FTV_KIND_F16 ? 2u : 4u);
    for (uint64_t j = 0; j < n; j++)
        if (!isfinite(value_at(p, e->kind, j)))
            return fail(L, FTV_ERR_FORMAT, "tensor %s: holds NaN or infinite values", name);
    const int scales = r->group == FTV_GROUP_ROW_SCALE;
    const float lo = scales ? FTV_MIN_SCALE : -FTV_MAX_ABS_VALUE, hi = scales ? FTV_MAX_SCALE : FTV_MAX_ABS_VALUE;
    for (uint64_t j = 0; j < n; j++) {
        const float v = value_at(p, e->kind, j);
        if (v < lo || v > hi)
            return fail(L, FTV_ERR_FORMAT, "tensor %s: %s %s outside [%s, %s]", name, scales ? "scale" : "value",
                        fmt_g(v, a, sizeof a), fmt_g(lo, b, sizeof b), fmt_g(hi, c, sizeof c));
    }
    return FTV_OK;
}

static ftv_status check_table(loader *L) {
    const ftv_header *h = &L->h;
    const uint64_t n = h->num_tensors, end = h->file_size - FTV_CRC_SIZE;
    const uint64_t table_end = FTV_HEADER_SIZE + n * FTV_ENTRY_SIZE;
    if (table_end > end || h->depth > n)
        return fail(L, FTV_ERR_FORMAT, "tensor table of %u entries does not fit the file or the model depth",
                    h->num_tensors);
    uint32_t expected = 0;
    cursor c = {0};
    while (next_tensor(h, &c)) expected++;
    if (n != expected)
        return fail(L, FTV_ERR_FORMAT, "%u tensors where the header's configuration implies %u", h->num_tensors,
                    expected);
    char name[FTV_NAME_SIZE + 16];
    ftv_tensor e;
    uint64_t prev_end = table_end;
    c = (cursor){0};
    for (uint32_t i = 0; i < expected; i++) {
        const ftv_tensor_rule *r = next_tensor(h, &c);
        tensor_name(r, &c, name, sizeof name);
        read_entry(L, i, &e);
        TRY(check_entry(L, i, r, name, &e, &prev_end));
    }
    c = (cursor){0};
    for (uint32_t i = 0; i < expected; i++) {
        const ftv_tensor_rule *r = next_tensor(h, &c);
        tensor_name(r, &c, name, sizeof name);
        read_entry(L, i, &e);
        TRY(check_data(L, r, name, &e));
    }
    return FTV_OK;
}

/* --- binding --------------------------------------------------------------------------- */

/* Point every field of the table at its tensor (the file is valid: nothing can fail). */
static void bind_all(loader *L, ftv_model *m) {
    cursor c = {0};
    ftv_tensor e;
    for (uint32_t i = 0; i < L->h.num_tensors; i++) {
        const ftv_tensor_rule *r = next_tensor(&L->h, &c);
        read_entry(L, i, &e);
        uint8_t *owner = c.part == 1 ? (uint8_t *)&m->w.blocks[c.block] : (uint8_t *)&m->w;
        const uint8_t *data = L->data + e.offset;
        uint64_t rows, k;
        rows_and_k(&e, &rows, &k);
        if (is_ternary(r->group)) {
            ftv_tmat *t = (ftv_tmat *)(owner + r->field);
            t->data = data;
            t->rows = (int)rows;
            t->k = (int)k;
            t->row_bytes = (int)e.row_bytes;
            t->kind = e.kind;
            t->scale = e.scale; /* 0 with per-row scales: the ROW_SCALE tensor after it */
        } else if (r->group == FTV_GROUP_CLASS_NAMES) {
            ftv_blob *blob = (ftv_blob *)(owner + r->field);
            blob->data = data;
            blob->nbytes = e.nbytes;
        } else {
            ftv_fvec *v = (ftv_fvec *)(owner + r->field);
            v->data = data;
            v->is_f16 = e.kind == FTV_KIND_F16;
            v->n = (int)(rows * k);
        }
    }
}

static ftv_status bind_class_names(loader *L, ftv_model *m) {
    if (!m->w.names.nbytes) return FTV_OK;
    m->class_names = (const char **)calloc((size_t)m->cfg.num_classes, sizeof(char *));
    if (!m->class_names) return fail(L, FTV_ERR_NOMEM, "out of memory");
    const char *p = (const char *)m->w.names.data; /* check_data: num_classes names, each NUL-terminated */
    for (int i = 0; i < m->cfg.num_classes; i++) {
        m->class_names[i] = p;
        p += strlen(p) + 1;
    }
    return FTV_OK;
}

/* The configuration of a valid header, and what the engine derives from it. */
static ftv_status configure(loader *L, ftv_model *m) {
    const ftv_header *h = &L->h;
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
    c->num_tokens = m->num_patches + ((h->flags & FTV_FLAG_CLASS_TOKEN) != 0);
    m->pos_len = (int)pos_len(h);
    m->head_dim = c->embed_dim / c->num_heads;
    m->ln_eps = h->ln_eps;
    m->rms_eps = h->rms_eps;
    m->quant_eps = h->quant_eps;
    const int kp = c->in_chans * c->patch_h * c->patch_w;
    m->max_k = c->embed_dim > c->mlp_hidden ? c->embed_dim : c->mlp_hidden;
    if (kp > m->max_k) m->max_k = kp;
    /* The engine's own limit beyond the file's: every activation buffer, sized in 64 bits, must
     * be addressable (only 32-bit targets can fail here) with room to spare. */
    const uint64_t T = (uint64_t)c->num_tokens, D = (uint64_t)c->embed_dim, H = (uint64_t)c->mlp_hidden;
    const uint64_t need = 8u * T * (D + H + (uint64_t)m->max_k) + (uint64_t)h->img_h * h->img_w * 4u * h->in_chans;
    if (need > SIZE_MAX / 8u)
        return fail(L, FTV_ERR_NOMEM, "the model's activations (about %llu bytes) do not fit this machine's "
                    "address space", (unsigned long long)need);
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
    TRY(check_header(L));
    TRY(check_table(L));
    TRY(configure(L, m));
    m->w.blocks = (ftv_block *)calloc((size_t)m->cfg.depth, sizeof(ftv_block));
    if (!m->w.blocks) return fail(L, FTV_ERR_NOMEM, "out of memory");
    bind_all(L, m);
    TRY(bind_class_names(L, m));
    m->kernels = ftv_kernels_select();
    TRY(repack_weights(L, m));
    m->ldk = (m->cfg.num_tokens + 7) & ~7;
    if (layout_arena(m, 1) != FTV_OK) return fail(L, FTV_ERR_NOMEM, "cannot allocate the arena");
    return FTV_OK;
}

ftv_status ftv_model_load_buffer(const void *data, size_t size, ftv_model **out, char *err, size_t errlen) {
    if (err && errlen) err[0] = '\0';
    if (!out) return FTV_ERR_ARG;
    *out = NULL;
    if (!data && size) return FTV_ERR_ARG;
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
    if (size == 0) { /* refused as the Python reader refuses it */
        fclose(f);
        return ftv_model_load_buffer(NULL, 0, out, err, errlen);
    }
    uint8_t *buf = size > 0 ? (uint8_t *)malloc((size_t)size) : NULL;
    int ok = buf && fseek(f, 0, SEEK_SET) == 0 && fread(buf, 1, (size_t)size, f) == (size_t)size;
    fclose(f);
    if (!ok) {
        free(buf);
        return fail(&L, size > 0 && !buf ? FTV_ERR_NOMEM : FTV_ERR_IO, "cannot read %s%s", path,
                    size > 0 && !buf ? ": out of memory" : "");
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
    ftv_rollout_free(m->rollout);
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
    case FTV_ERR_INPUT: return "the input holds NaN or infinite values";
    case FTV_ERR_OVERFLOW: return "the forward pass overflowed float range (input or weights far out of range)";
    }
    return "unknown error";
}
