/* Where the forward pass spends its time, by phase: compiled in only with -DFTV_PROFILE
 * (benchmarks/engine_speed.py builds such a library); in every other build FTV_PHASE()
 * expands to nothing and costs nothing.
 *
 * Each thread keeps one clock: FTV_PHASE(prof, p) charges the time since its previous call to
 * the phase it was in, then enters phase p. So the phases of a thread add up to its whole
 * forward pass, barriers included (FTV_PHASE_WAIT). */
#ifndef FTV_PROFILE_H
#define FTV_PROFILE_H

#include <stdint.h>

typedef enum {
    FTV_PHASE_EMBED,     /* image quantizer, patch-embedding GEMM, class token, position embedding */
    FTV_PHASE_NORM,      /* LayerNorm, RMSNorm and the int8 quantizers */
    FTV_PHASE_GEMM,      /* ternary x int8 GEMMs (qkv, proj, fc1, fc2, head) and their epilogues */
    FTV_PHASE_ATTENTION, /* scores, softmax, weighted values */
    FTV_PHASE_GELU,
    FTV_PHASE_WAIT,      /* barriers: waiting for the other threads */
    FTV_PHASE_OTHER,     /* the rest: pooling, final norm, head set-up, bookkeeping */
    FTV_PHASES
} ftv_phase;

typedef struct {
    uint64_t ns[FTV_PHASES]; /* accumulated since the last ftv_model_profile() */
    uint64_t last;           /* clock at the last switch */
    int phase;               /* the phase being timed */
} ftv_profile;

#ifdef FTV_PROFILE
void ftv_profile_switch(ftv_profile *p, int phase);
#define FTV_PHASE(prof, p) ftv_profile_switch((prof), (p))
#else
#define FTV_PHASE(prof, p) ((void)0)
#endif

#endif
