/* AMX tile operations for the AMX kernel set (ftv_kernels_amx.c): the tile configuration, and
 * the instructions the set uses, as the intrinsics of immintrin.h, or, built with
 * -DFTV_AMX_EMULATE, as plain C with the same semantics (the instructions' pseudocode in Intel's
 * SDM) on a per-thread tile file. The emulation lets a CPU without AMX (and the sanitizers) run
 * the set's tiling, operand layout and epilogue against the scalar kernels; only the instruction
 * encoding and the OS permission are left to a CPU that has AMX (docs/engine.md).
 *
 *   AMX_LOADCONFIG(cfg)      ldtilecfg: the palette, rows and bytes a row of each of 8 tiles
 *   AMX_RELEASE()            tilerelease: tiles back to their initial state
 *   AMX_ZERO(t)              tilezero
 *   AMX_LOAD(t, p, stride)   tileloadd: rows of colsb bytes, `stride` bytes apart
 *   AMX_STORE(t, p, stride)  tilestored
 *   AMX_DPBSUD(c, a, b)      tdpbsud: c[m][n] += sum of 4 products s8 a[m][4k + i] x u8 b[k][4n + i]
 *   AMX_DPBF16PS(c, a, b)    tdpbf16ps: fp32 c[m][n] += bf16 a[m][2k] b[k][2n], then += a[m][2k + 1]
 *                            b[k][2n + 1], for each k in order (AMX-BF16: the fast mode's attention)
 *
 * Tile numbers are constants (the instructions encode them). */
#ifndef FTV_AMX_H
#define FTV_AMX_H

#include <stdint.h>
#include <string.h>

/* The 64-byte operand of ldtilecfg (palette 1: 8 tiles of up to 16 rows x 64 bytes). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} ftv_tilecfg;
_Static_assert(sizeof(ftv_tilecfg) == 64, "ldtilecfg reads 64 bytes");

#define AMX_TILES 8
#define AMX_ROWS 16
#define AMX_COLSB 64

#ifndef FTV_AMX_EMULATE

#define AMX_LOADCONFIG(cfg) _tile_loadconfig(cfg)
#define AMX_RELEASE() _tile_release()
#define AMX_ZERO(t) _tile_zero(t)
#define AMX_LOAD(t, p, stride) _tile_loadd(t, p, stride)
#define AMX_STORE(t, p, stride) _tile_stored(t, p, stride)
#define AMX_DPBSUD(c, a, b) _tile_dpbsud(c, a, b)
#define AMX_DPBF16PS(c, a, b) _tile_dpbf16ps(c, a, b)

#else

#include <stdio.h>
#include <stdlib.h>

/* The tile registers of this thread (each thread has its own, as on the CPU). */
static _Thread_local struct {
    ftv_tilecfg cfg;
    int configured;
    uint8_t t[AMX_TILES][AMX_ROWS][AMX_COLSB];
} amx_emu;

/* Where the CPU would fault (#UD, or #GP for a bad configuration), the emulation aborts: the
 * kernel set has a bug. */
static void amx_emu_fault(const char *what) {
    fprintf(stderr, "ftervit AMX emulation: %s\n", what);
    abort();
}

static void amx_emu_loadconfig(const void *p) {
    memcpy(&amx_emu.cfg, p, sizeof amx_emu.cfg);
    if (amx_emu.cfg.palette != 1 || amx_emu.cfg.start_row) amx_emu_fault("ldtilecfg: palette 1, start_row 0 only");
    for (int i = 0; i < 16; i++) {
        const int used = amx_emu.cfg.rows[i] || amx_emu.cfg.colsb[i];
        if (i >= AMX_TILES ? used
                           : amx_emu.cfg.rows[i] > AMX_ROWS || amx_emu.cfg.colsb[i] > AMX_COLSB ||
                                 (used && (!amx_emu.cfg.rows[i] || !amx_emu.cfg.colsb[i])))
            amx_emu_fault("ldtilecfg: tile shape out of palette 1");
    }
    memset(amx_emu.t, 0, sizeof amx_emu.t);
    amx_emu.configured = 1;
}

static void amx_emu_release(void) { memset(&amx_emu, 0, sizeof amx_emu); }

static void amx_emu_check(int t) {
    if (!amx_emu.configured || !amx_emu.cfg.rows[t]) amx_emu_fault("tile not configured");
}

static void amx_emu_zero(int t) {
    amx_emu_check(t);
    memset(amx_emu.t[t], 0, sizeof amx_emu.t[t]);
}

/* Rows past cfg.rows and bytes past cfg.colsb are zeroed, as tileloadd does. */
static void amx_emu_load(int t, const void *p, size_t stride) {
    amx_emu_check(t);
    memset(amx_emu.t[t], 0, sizeof amx_emu.t[t]);
    for (int r = 0; r < amx_emu.cfg.rows[t]; r++)
        memcpy(amx_emu.t[t][r], (const uint8_t *)p + (size_t)r * stride, amx_emu.cfg.colsb[t]);
}

static void amx_emu_store(int t, void *p, size_t stride) {
    amx_emu_check(t);
    for (int r = 0; r < amx_emu.cfg.rows[t]; r++)
        memcpy((uint8_t *)p + (size_t)r * stride, amx_emu.t[t][r], amx_emu.cfg.colsb[t]);
}

/* The SDM's shape rules of the tile products: a's rows = c's rows, a's colsb = 4 x b's rows,
 * b's colsb = c's colsb (4 bytes a column: quadruples of bytes, or pairs of bf16). */
static const ftv_tilecfg *amx_emu_product(int c, int a, int b, const char *fault) {
    amx_emu_check(c), amx_emu_check(a), amx_emu_check(b);
    const ftv_tilecfg *cf = &amx_emu.cfg;
    if (cf->rows[a] != cf->rows[c] || cf->colsb[a] != 4 * cf->rows[b] || cf->colsb[b] != cf->colsb[c] ||
        cf->colsb[c] % 4)
        amx_emu_fault(fault);
    return cf;
}

static void amx_emu_dpbsud(int c, int a, int b) {
    const ftv_tilecfg *cf = amx_emu_product(c, a, b, "tdpbsud: tile shapes do not match");
    for (int m = 0; m < cf->rows[c]; m++)
        for (int n = 0; n < cf->colsb[c] / 4; n++) {
            int32_t acc;
            memcpy(&acc, &amx_emu.t[c][m][4 * n], 4);
            for (int k = 0; k < cf->colsb[a] / 4; k++)
                for (int i = 0; i < 4; i++)
                    acc += (int32_t)(int8_t)amx_emu.t[a][m][4 * k + i] * (int32_t)amx_emu.t[b][k][4 * n + i];
            memcpy(&amx_emu.t[c][m][4 * n], &acc, 4);
        }
}

/* A bf16 as fp32, denormals as zero (DAZ); an fp32 denormal result flushed to zero (FTZ). The
 * SDM's pseudocode adds each product in turn, rounding to nearest even: a product of two bf16 is
 * exact in fp32, so `acc + x * y` rounds once, as its fused multiply-add does. */
static float amx_emu_ftz(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if (!(u & 0x7F800000u)) u &= 0x80000000u;
    memcpy(&f, &u, 4);
    return f;
}

static float amx_emu_bf16(const uint8_t *p) {
    const uint32_t u = (uint32_t)(p[0] | p[1] << 8) << 16;
    float f;
    memcpy(&f, &u, 4);
    return amx_emu_ftz(f); /* DAZ: the same test on the operand */
}

static void amx_emu_dpbf16ps(int c, int a, int b) {
    const ftv_tilecfg *cf = amx_emu_product(c, a, b, "tdpbf16ps: tile shapes do not match");
    for (int m = 0; m < cf->rows[c]; m++)
        for (int n = 0; n < cf->colsb[c] / 4; n++) {
            float acc;
            memcpy(&acc, &amx_emu.t[c][m][4 * n], 4);
            for (int k = 0; k < cf->colsb[a] / 4; k++)
                for (int i = 0; i < 2; i++)
                    acc = amx_emu_ftz(acc + amx_emu_bf16(&amx_emu.t[a][m][4 * k + 2 * i]) *
                                                amx_emu_bf16(&amx_emu.t[b][k][4 * n + 2 * i]));
            memcpy(&amx_emu.t[c][m][4 * n], &acc, 4);
        }
}

#define AMX_LOADCONFIG(cfg) amx_emu_loadconfig(cfg)
#define AMX_RELEASE() amx_emu_release()
#define AMX_ZERO(t) amx_emu_zero(t)
#define AMX_LOAD(t, p, stride) amx_emu_load(t, p, stride)
#define AMX_STORE(t, p, stride) amx_emu_store(t, p, stride)
#define AMX_DPBSUD(c, a, b) amx_emu_dpbsud(c, a, b)
#define AMX_DPBF16PS(c, a, b) amx_emu_dpbf16ps(c, a, b)

#endif /* FTV_AMX_EMULATE */

#endif
