/*
 * ftv_tensors.h - the tensors of a .ftv file, in file order: the one table the C loader
 * validates and binds by (engine/src/ftv_model.c). tests/test_format_c.py expands it for
 * every flag combination and compares it with tensor_specs() of src/ftervit/export/format.py,
 * the list the Python writer and reader follow, so the two cannot drift.
 *
 * A file is the stem tensors, then the block tensors once per block (named "blocks.<i>."
 * followed by the name below), then the head tensors; a row whose flag is not 0 is present
 * exactly when the header has that flag.
 *
 *   X(name, group, flag, d0, d1, d2, d3, field)
 *
 * group: how the tensor is stored and checked (enum ftv_group);
 * d0..d3: its shape, in symbols the header gives values to (enum ftv_dim; NONE: no such dim);
 * field: where the engine binds it (ftv_weights for the stem and head rows, ftv_block for the
 * block rows; engine/src/ftv_model.h).
 */
#ifndef FTV_TENSORS_H
#define FTV_TENSORS_H

#include "ftv_format.h"

enum ftv_group {
    FTV_GROUP_TERNARY = 1,      /* tq2/tq1 as header.format says; one scale, in the entry */
    FTV_GROUP_TERNARY_ROWS = 2, /* the same, one scale per row: the ROW_SCALE tensor after it; entry scale 0 */
    FTV_GROUP_ROW_SCALE = 3,    /* F32 per-row scales, each in [FTV_MIN_SCALE, FTV_MAX_SCALE] */
    FTV_GROUP_FLOAT = 4,        /* F16 or F32, every value finite and |v| <= FTV_MAX_ABS_VALUE */
    FTV_GROUP_CLASS_NAMES = 5,  /* U8, 1-D: num_classes non-empty UTF-8 names, each followed by NUL */
};

enum ftv_dim {
    FTV_DIM_NONE = 0,
    FTV_DIM_1,       /* 1 */
    FTV_DIM_D,       /* embed_dim */
    FTV_DIM_D3,      /* 3 * embed_dim */
    FTV_DIM_H,       /* mlp_hidden */
    FTV_DIM_CLASSES, /* num_classes */
    FTV_DIM_CHANS,   /* in_chans */
    FTV_DIM_PATCH_H,
    FTV_DIM_PATCH_W,
    FTV_DIM_POS,     /* rows of pos_embed: patches, + 1 with a class token and no NO_EMBED_CLASS */
    FTV_DIM_ANY,     /* any length (class_names) */
};

#define FTV_TENSORS_STEM(X)                                                                     \
    X("patch_embed.proj.weight", TERNARY_ROWS, 0, D, CHANS, PATCH_H, PATCH_W, patch)             \
    X("patch_embed.proj.weight_scale", ROW_SCALE, 0, D, NONE, NONE, NONE, patch.row_scale)       \
    X("patch_embed.proj.channel_scale", FLOAT, 0, D, NONE, NONE, NONE, patch_cs)                 \
    X("patch_embed.proj.bias", FLOAT, FTV_FLAG_PATCH_BIAS, D, NONE, NONE, NONE, patch_bias)      \
    X("cls_token", FLOAT, FTV_FLAG_CLASS_TOKEN, 1, 1, D, NONE, cls)                              \
    X("pos_embed", FLOAT, 0, 1, POS, D, NONE, pos)

#define FTV_TENSORS_BLOCK(X)                                                                    \
    X("norm1.weight", TERNARY, 0, D, NONE, NONE, NONE, norm1_g)                                  \
    X("norm1.bias", TERNARY, 0, D, NONE, NONE, NONE, norm1_b)                                    \
    X("attn.qkv.norm.weight", FLOAT, 0, D, NONE, NONE, NONE, qkv_rms)                            \
    X("attn.qkv.weight", TERNARY, 0, D3, D, NONE, NONE, qkv)                                     \
    X("attn.proj.norm.weight", FLOAT, 0, D, NONE, NONE, NONE, proj_rms)                          \
    X("attn.proj.weight", TERNARY, 0, D, D, NONE, NONE, proj)                                    \
    X("ls1.gamma", FLOAT, FTV_FLAG_LAYER_SCALE, D, NONE, NONE, NONE, ls1)                        \
    X("norm2.weight", TERNARY, 0, D, NONE, NONE, NONE, norm2_g)                                  \
    X("norm2.bias", TERNARY, 0, D, NONE, NONE, NONE, norm2_b)                                    \
    X("mlp.fc1.norm.weight", FLOAT, 0, D, NONE, NONE, NONE, fc1_rms)                             \
    X("mlp.fc1.weight", TERNARY, 0, H, D, NONE, NONE, fc1)                                       \
    X("mlp.fc2.norm.weight", FLOAT, 0, H, NONE, NONE, NONE, fc2_rms)                             \
    X("mlp.fc2.weight", TERNARY, 0, D, H, NONE, NONE, fc2)                                       \
    X("ls2.gamma", FLOAT, FTV_FLAG_LAYER_SCALE, D, NONE, NONE, NONE, ls2)

#define FTV_TENSORS_HEAD(X)                                                                     \
    X("norm.weight", TERNARY, FTV_FLAG_FINAL_NORM, D, NONE, NONE, NONE, norm_g)                  \
    X("norm.bias", TERNARY, FTV_FLAG_FINAL_NORM, D, NONE, NONE, NONE, norm_b)                    \
    X("fc_norm.weight", TERNARY, FTV_FLAG_FC_NORM, D, NONE, NONE, NONE, fcn_g)                   \
    X("fc_norm.bias", TERNARY, FTV_FLAG_FC_NORM, D, NONE, NONE, NONE, fcn_b)                     \
    X("head.norm.weight", FLOAT, 0, D, NONE, NONE, NONE, head_rms)                               \
    X("head.weight", TERNARY, 0, CLASSES, D, NONE, NONE, head)                                   \
    X("class_names", CLASS_NAMES, FTV_FLAG_CLASS_NAMES, ANY, NONE, NONE, NONE, names)

/* A table row as data (expand a table with FTV_TENSOR_RULE and the struct its fields are in). */
typedef struct {
    const char *name;
    uint32_t group; /* enum ftv_group */
    uint32_t flag;  /* 0: always present */
    uint8_t dims[FTV_MAX_DIMS]; /* enum ftv_dim */
    size_t field;   /* offsetof the field it binds to */
} ftv_tensor_rule;

#define FTV_TENSOR_RULE(owner, name, group, flag, d0, d1, d2, d3, field)                          \
    {name, FTV_GROUP_##group, flag, {FTV_DIM_##d0, FTV_DIM_##d1, FTV_DIM_##d2, FTV_DIM_##d3},     \
     offsetof(owner, field)},

#endif /* FTV_TENSORS_H */
