/* Internal: attention rollout (Abnar & Zuidema 2020) alongside the forward pass
 * (ftv_model_forward_rollout). Three hooks, all no-ops for the plain forward pass, which
 * passes no workspace:
 *   ftv_rollout_head   after a head's queries and keys exist, before attention overwrites
 *                      the queries: that head's probabilities for queries [q0, q1);
 *   ftv_rollout_fold   after a block's attention (every head done, a barrier passed): rows
 *                      [t0, t1) of that block's (head-mean + I) / 2, renormalized;
 *   ftv_rollout_map    at the end, on one thread: the map from every block's folded matrix.
 * Each writes only rows it owns, so threads need no synchronization beyond the forward
 * pass's own barriers, and the map does not depend on the number of threads. */
#ifndef FTV_ROLLOUT_H
#define FTV_ROLLOUT_H

#include "ftv_model.h"

typedef struct ftv_rollout ftv_rollout;

/* Bytes of the workspace: (heads + depth) x tokens x tokens floats, plus 2 x tokens doubles. */
size_t ftv_rollout_bytes(const ftv_model *m);

/* The workspace, allocated once; NULL when out of memory. */
ftv_rollout *ftv_rollout_new(const ftv_model *m);
void ftv_rollout_free(ftv_rollout *r);

/* Softmax(q . k * scale) of head h for queries [q0, q1): the queries in m->s.o (the head's
 * columns), the keys transposed in kt (row stride m->ldk). */
void ftv_rollout_head(const ftv_model *m, ftv_rollout *r, int h, int q0, int q1, const float *kt);

/* Rows [t0, t1) of block `block`'s folded attention. */
void ftv_rollout_fold(const ftv_model *m, ftv_rollout *r, int block, int t0, int t1);

/* The map: num_patches floats (grid rows of grid columns). */
void ftv_rollout_map(const ftv_model *m, ftv_rollout *r, float *map);

#endif
