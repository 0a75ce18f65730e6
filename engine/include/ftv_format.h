/*
 * ftv_format.h - the packed FTerViT model file (.ftv), format version 1.
 *
 * The layout is documented byte by byte in docs/format.md; its Python definition is
 * src/ftervit/export/format.py. tests/test_format_c.py compiles this header, compares every
 * constant, size and offset with the Python module, and decodes a Python-written file with
 * the helpers below, so the two sides cannot drift.
 *
 * File = header (256 B) | tensor table (num_tensors x 96 B) | zero padding |
 *        tensor data, each at an offset that is a multiple of header.alignment | CRC32 (4 B).
 * All integers and floats are little-endian: on little-endian targets (x86, ARM, Xtensa)
 * the structs below map the bytes of a file (or its mmap / flash image) directly.
 */
#ifndef FTV_FORMAT_H
#define FTV_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FTV_MAGIC "\x89" "FTV\r\n\x1a\n" /* 8 bytes, no terminating NUL in the file */
#define FTV_MAGIC_SIZE 8
#define FTV_VERSION 1u
#define FTV_ALIGNMENT 64u /* what the writer uses; readers honour header.alignment */
#define FTV_NAME_SIZE 48
#define FTV_MAX_DIMS 4
#define FTV_MAX_CHANNELS 4
#define FTV_CRC_SIZE 4
#define FTV_HEADER_SIZE 256
#define FTV_ENTRY_SIZE 96

/* Limits every reader enforces (the same as src/ftervit/export/format.py). They keep every
 * size computation far from overflow and refuse values no trained model has. The float
 * bounds are powers of two, so float and double comparisons agree exactly. */
#define FTV_MAX_DIM 65536u     /* every header dimension; the row length K of every matrix */
#define FTV_MAX_IMG_SIDE 4096u /* img_h, img_w */
#define FTV_MAX_TOKENS 65536u  /* patches + class token */
#define FTV_MAX_DEPTH 1024u
#define FTV_MAX_ACTIVATIONS (1u << 28) /* tokens * max(embed_dim, mlp_hidden, K): one activation matrix */
#define FTV_MIN_EPS 0x1p-100f  /* ln_eps, rms_eps, quant_eps in [FTV_MIN_EPS, FTV_MAX_EPS] */
#define FTV_MAX_EPS 1.0f
#define FTV_MIN_SCALE 0x1p-24f /* ternary scales (value = code / scale), per tensor and per row */
#define FTV_MAX_SCALE 0x1p24f
#define FTV_MAX_ABS_VALUE 0x1p24f /* every value of a float tensor */
#define FTV_MIN_STD 0x1p-16f      /* input std per channel */
#define FTV_MAX_STD 0x1p16f
#define FTV_MAX_ABS_MEAN 0x1p16f /* input mean per channel */

/* header.format: how every ternary tensor is packed */
enum ftv_weight_format {
    FTV_FORMAT_TQ2 = 1, /* 4 codes per byte */
    FTV_FORMAT_TQ1 = 2, /* 5 trits per byte, base 3 */
};

/* ftv_tensor.kind */
enum ftv_kind {
    FTV_KIND_F32 = 1,
    FTV_KIND_F16 = 2, /* IEEE binary16 */
    FTV_KIND_TQ2 = 3,
    FTV_KIND_TQ1 = 4,
    FTV_KIND_U8 = 5,
};

/* header.flags */
enum ftv_flag {
    FTV_FLAG_CLASS_TOKEN = 1u << 0,    /* cls token prepended to the patch tokens */
    FTV_FLAG_NO_EMBED_CLASS = 1u << 1, /* pos_embed covers patch tokens only (DeiT-III) */
    FTV_FLAG_LAYER_SCALE = 1u << 2,    /* blocks.*.ls1/ls2.gamma */
    FTV_FLAG_FINAL_NORM = 1u << 3,     /* LayerNorm "norm" on every token after the blocks */
    FTV_FLAG_FC_NORM = 1u << 4,        /* LayerNorm "fc_norm" on the pooled feature */
    FTV_FLAG_AVG_POOL = 1u << 5,       /* mean of patch tokens; otherwise the cls token */
    FTV_FLAG_PATCH_BIAS = 1u << 6,     /* patch_embed.proj.bias present */
    FTV_FLAG_CLASS_NAMES = 1u << 7,    /* "class_names" tensor present */
};

typedef struct ftv_header {
    uint8_t magic[FTV_MAGIC_SIZE];
    uint32_t version;
    uint32_t header_size; /* FTV_HEADER_SIZE */
    uint32_t entry_size;  /* FTV_ENTRY_SIZE */
    uint32_t num_tensors;
    uint64_t file_size;     /* whole file, CRC included */
    uint64_t source_params; /* parameters of the FP32 model it came from */
    uint32_t format;        /* enum ftv_weight_format */
    uint32_t flags;         /* enum ftv_flag */
    uint32_t alignment;     /* every tensor offset is a multiple of it */
    uint32_t img_h, img_w, patch_h, patch_w, in_chans;
    uint32_t embed_dim, depth, num_heads, mlp_hidden, num_classes;
    float ln_eps;    /* TernaryLayerNorm */
    float rms_eps;   /* RMSNorm inside every BitLinear */
    float quant_eps; /* floor of absmax / absmean in the quantizers */
    float mean[FTV_MAX_CHANNELS]; /* input normalization; unused slots 0 */
    float std[FTV_MAX_CHANNELS];
    uint8_t reserved[120]; /* zero */
} ftv_header;

typedef struct ftv_tensor {
    char name[FTV_NAME_SIZE]; /* UTF-8, NUL-padded */
    uint32_t kind;            /* enum ftv_kind */
    uint32_t ndim;            /* 1..FTV_MAX_DIMS */
    uint32_t dims[FTV_MAX_DIMS]; /* unused dims 0 */
    uint64_t offset;          /* absolute file offset of the data */
    uint64_t nbytes;
    float scale;              /* ternary, one scale: value = code / scale; else 0 */
    uint32_t row_bytes;       /* ternary: bytes per packed row; else 0 */
} ftv_tensor;

_Static_assert(sizeof(float) == 4, "ftv: float must be IEEE binary32");
_Static_assert(sizeof(ftv_header) == FTV_HEADER_SIZE, "ftv_header size");
_Static_assert(offsetof(ftv_header, version) == 8, "ftv_header layout");
_Static_assert(offsetof(ftv_header, num_tensors) == 20, "ftv_header layout");
_Static_assert(offsetof(ftv_header, file_size) == 24, "ftv_header layout");
_Static_assert(offsetof(ftv_header, source_params) == 32, "ftv_header layout");
_Static_assert(offsetof(ftv_header, format) == 40, "ftv_header layout");
_Static_assert(offsetof(ftv_header, img_h) == 52, "ftv_header layout");
_Static_assert(offsetof(ftv_header, num_classes) == 88, "ftv_header layout");
_Static_assert(offsetof(ftv_header, ln_eps) == 92, "ftv_header layout");
_Static_assert(offsetof(ftv_header, mean) == 104, "ftv_header layout");
_Static_assert(offsetof(ftv_header, std) == 120, "ftv_header layout");
_Static_assert(offsetof(ftv_header, reserved) == 136, "ftv_header layout");
_Static_assert(sizeof(ftv_tensor) == FTV_ENTRY_SIZE, "ftv_tensor size");
_Static_assert(offsetof(ftv_tensor, kind) == 48, "ftv_tensor layout");
_Static_assert(offsetof(ftv_tensor, dims) == 56, "ftv_tensor layout");
_Static_assert(offsetof(ftv_tensor, offset) == 72, "ftv_tensor layout");
_Static_assert(offsetof(ftv_tensor, nbytes) == 80, "ftv_tensor layout");
_Static_assert(offsetof(ftv_tensor, scale) == 88, "ftv_tensor layout");
_Static_assert(offsetof(ftv_tensor, row_bytes) == 92, "ftv_tensor layout");

/*
 * Ternary rows. dim 0 of a ternary tensor is the row (output channel); the other dims,
 * flattened in C order, give K codes per row (a 1-D tensor is one row). Each row starts on
 * a byte boundary, row_bytes apart, and its last byte is completed with codes of 0.
 * A code is q + 1 for q in {-1, 0, +1}.
 *   tq2: code i at bits 2*(i%4) of byte i/4 (first code in the low bits); code 3 invalid.
 *   tq1: byte j = sum over t < 5 of code(5j+t) * 3^t; bytes above 242 invalid.
 */
static inline int ftv_ternary_get(const uint8_t *row, uint32_t i, uint32_t kind) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    if (kind == FTV_KIND_TQ2) return (int)((row[i >> 2] >> ((i & 3u) * 2u)) & 3u) - 1;
    return (int)(row[i / 5u] / pow3[i % 5u] % 3u) - 1;
}

/* IEEE binary16 -> binary32, exact (subnormals, inf and NaN included). */
static inline float ftv_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
    if (exp == 0x1Fu) {
        bits = sign | 0x7F800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13); /* rebias 15 -> 127 */
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: normalize the mantissa */
        exp = 113u;
        while (!(man & 0x400u)) {
            man <<= 1;
            exp--;
        }
        bits = sign | (exp << 23) | ((man & 0x3FFu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/*
 * CRC32 as zlib's crc32() (IEEE 802.3, reflected 0xEDB88320): start with crc = 0, feed the
 * file in pieces; the last 4 bytes of a file hold the CRC of every byte before them.
 */
static inline uint32_t ftv_crc32(uint32_t crc, const void *data, size_t n) {
    static const uint32_t nibble[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
        0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
        0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
    const uint8_t *p = (const uint8_t *)data;
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ nibble[crc & 15u];
        crc = (crc >> 4) ^ nibble[crc & 15u];
    }
    return ~crc;
}

#endif /* FTV_FORMAT_H */
