/* libFuzzer harness: the loader and one forward pass on arbitrary bytes.
 *
 * Each input is loaded twice: as it is, and with its header's file_size and its CRC32
 * repaired, so that mutations reach the checks behind the checksum. A file that loads runs one
 * forward pass (a few inputs whose values the fuzzer picks, extremes included), which must end
 * with logits or FTV_ERR_OVERFLOW; a refusal must say why, in one line. Built with
 * -fsanitize=fuzzer,address,undefined (float-cast-overflow included) by `make -C engine fuzz`;
 * docs/engine.md gives the long run's figures. */
#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ftervit.h"
#include "ftv_format.h"

#define MAX_INPUT_VALUES (1u << 16) /* skip the forward pass of a larger image: keeps executions fast */

static void require(int ok) {
    if (!ok) __builtin_trap();
}

/* Input values from the last bytes of the file: ordinary, zero or extreme, as they say. */
static void fill(float *x, size_t n, const uint8_t *data, size_t size) {
    static const float picks[8] = {0.5f, -1.25f, 0.0f, 1e-40f, 1e6f, -1e30f, FLT_MAX, -3e38f};
    const uint8_t sel = size ? data[size - 1] : 0, sel2 = size > 1 ? data[size - 2] : 0;
    for (size_t i = 0; i < n; i++) {
        const float ramp = ((float)((i * 7u + sel2) % 11u) - 5.0f) / 5.0f; /* in [-1, 1]: stays finite */
        x[i] = (sel & 0x80u) ? picks[(sel + i) % 8u] : ramp * picks[sel % 8u];
    }
}

static void try_load(const uint8_t *data, size_t size, const uint8_t *orig, size_t orig_size) {
    ftv_model *m = NULL;
    char err[512];
    err[0] = '\0';
    const ftv_status st = ftv_model_load_buffer(data, size, &m, err, sizeof err);
    if (st != FTV_OK) {
        require(m == NULL && err[0] != '\0' && strchr(err, '\n') == NULL);
        return;
    }
    const ftv_config *c = ftv_model_config(m);
    for (int i = 0; i < c->num_classes; i++) {
        const char *name = ftv_model_class_name(m, i);
        require(!(c->flags & FTV_FLAG_CLASS_NAMES) || (name && *name));
    }
    const size_t n = (size_t)c->in_chans * (size_t)c->img_h * (size_t)c->img_w;
    if (n <= MAX_INPUT_VALUES) {
        float *x = (float *)malloc(n * sizeof *x), *logits = (float *)malloc((size_t)c->num_classes * sizeof *logits);
        require(x && logits);
        fill(x, n, orig, orig_size);
        const ftv_status fs = ftv_model_forward(m, x, logits);
        require(fs == FTV_OK || fs == FTV_ERR_OVERFLOW);
        for (int i = 0; fs == FTV_OK && i < c->num_classes; i++) require(logits[i] - logits[i] == 0.0f); /* finite */
        free(x);
        free(logits);
    }
    ftv_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    try_load(data, size, data, size);
    if (size < FTV_HEADER_SIZE + FTV_CRC_SIZE) return 0;
    uint8_t *fixed = (uint8_t *)malloc(size);
    require(fixed != NULL);
    memcpy(fixed, data, size);
    const uint64_t file_size = size;
    memcpy(fixed + offsetof(ftv_header, file_size), &file_size, sizeof file_size);
    const uint32_t crc = ftv_crc32(0, fixed, size - FTV_CRC_SIZE);
    memcpy(fixed + size - FTV_CRC_SIZE, &crc, sizeof crc);
    try_load(fixed, size, data, size);
    free(fixed);
    return 0;
}
