/* The loader against the corpus of damaged and forged files that the Python tests share
 * (tests/data/ftv_corpus, written by tests/ftv_corpus.py): every file of MANIFEST.tsv refused
 * with the Python reader's message, from a path and from a buffer; every valid one loaded and
 * run by each kernel set the CPU has, on ordinary and extreme inputs, with bit-identical
 * results (logits, or the same FTV_ERR_OVERFLOW), and non-finite input refused.
 * `make test` runs it under ASan and UBSan (float-cast-overflow included).
 *
 *   test_loader [CORPUS_DIR]      (default ../tests/data/ftv_corpus, from engine/) */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftervit.h"

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } } while (0)

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(size > 0 ? (size_t)size : 1);
    *n = buf && fread(buf, 1, (size_t)size, f) == (size_t)size ? (size_t)size : 0;
    fclose(f);
    return buf;
}

#define PATTERNS 8

/* Input pattern p: ordinary values, then the extremes of float (zeros, subnormals, 1e30, +-FLT_MAX). */
static void fill(float *x, size_t n, int p) {
    for (size_t i = 0; i < n; i++) {
        const float sign = i % 2 ? -1.0f : 1.0f, ramp = (float)(i % 7) - 3.0f;
        switch (p) {
        case 0: x[i] = 0.25f * ramp; break;
        case 1: x[i] = 0.0f; break;
        case 2: x[i] = sign * 1e-40f; break;
        case 3: x[i] = 1e6f * ramp; break;
        case 4: x[i] = sign * 1e30f; break;
        case 5: x[i] = sign * FLT_MAX; break;
        case 6: x[i] = i == 0 ? -FLT_MAX : 3e38f; break;
        default: x[i] = ramp * 1e15f; break;
        }
    }
}

typedef struct {
    ftv_status status[PATTERNS];
    float *logits; /* PATTERNS x classes */
} run_result;

static ftv_model *load_with(const char *path, const char *kernels, int threads) {
    if (kernels) setenv("FTV_KERNELS", kernels, 1);
    else unsetenv("FTV_KERNELS");
    ftv_model *m = NULL;
    char err[256];
    ftv_status st = ftv_model_load_file(path, &m, err, sizeof err);
    CHECK(st == FTV_OK, "%s: %s", path, err);
    if (st == FTV_OK && threads > 1) CHECK(ftv_model_set_threads(m, threads) == FTV_OK, "%s: threads", path);
    return st == FTV_OK ? m : NULL;
}

static void run_all(ftv_model *m, run_result *r) {
    const ftv_config *c = ftv_model_config(m);
    const size_t n = (size_t)c->in_chans * (size_t)c->img_h * (size_t)c->img_w;
    float *x = malloc(n * sizeof *x);
    r->logits = calloc((size_t)PATTERNS * (size_t)c->num_classes, sizeof(float));
    for (int p = 0; p < PATTERNS; p++) {
        fill(x, n, p);
        r->status[p] = ftv_model_forward(m, x, r->logits + (size_t)p * c->num_classes);
        CHECK(r->status[p] == FTV_OK || r->status[p] == FTV_ERR_OVERFLOW, "pattern %d: status %d", p, r->status[p]);
    }
    CHECK(r->status[0] == FTV_OK && r->status[1] == FTV_OK, "ordinary inputs overflowed");
    x[n - 1] = NAN;
    CHECK(ftv_model_forward(m, x, r->logits) == FTV_ERR_INPUT, "NaN input accepted");
    x[n - 1] = -INFINITY;
    CHECK(ftv_model_forward(m, x, r->logits) == FTV_ERR_INPUT, "infinite input accepted");
    fill(x, n, 0);
    CHECK(ftv_model_forward(m, x, r->logits) == FTV_OK, "ordinary input after a refusal"); /* restores pattern 0 */
    free(x);
}

/* A valid file: every kernel set, and two threads, give the same status and logits bit for bit. */
static void check_valid(const char *path) {
    static const char *const sets[] = {"scalar", "lut", "avx2", NULL}; /* NULL: the best set the CPU has */
    run_result ref = {{0}, NULL};
    ftv_model *m = load_with(path, "scalar", 1);
    if (!m) return;
    const int classes = ftv_model_config(m)->num_classes;
    run_all(m, &ref);
    ftv_model_free(m);
    for (int s = 0; s < 5; s++) {
        m = load_with(path, s < 4 ? sets[s] : NULL, s < 4 ? 1 : 2);
        if (!m) continue;
        run_result got = {{0}, NULL};
        run_all(m, &got);
        for (int p = 0; p < PATTERNS; p++) {
            CHECK(got.status[p] == ref.status[p], "%s, kernels %s, threads %d, pattern %d: status %d vs %d", path,
                  ftv_model_kernels(m), ftv_model_threads(m), p, got.status[p], ref.status[p]);
            if (got.status[p] == FTV_OK && ref.status[p] == FTV_OK)
                CHECK(memcmp(got.logits + (size_t)p * classes, ref.logits + (size_t)p * classes,
                             (size_t)classes * sizeof(float)) == 0,
                      "%s, kernels %s, threads %d, pattern %d: logits differ from the scalar kernels'", path,
                      ftv_model_kernels(m), ftv_model_threads(m), p);
        }
        free(got.logits);
        ftv_model_free(m);
    }
    free(ref.logits);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "../tests/data/ftv_corpus";
    char path[8192], line[4096];
    snprintf(path, sizeof path, "%s/MANIFEST.tsv", dir);
    FILE *manifest = fopen(path, "r");
    if (!manifest) {
        printf("test_loader: cannot open %s\n", path);
        return 2;
    }
    int files = 0, valid = 0;
    while (fgets(line, sizeof line, manifest)) {
        line[strcspn(line, "\n")] = '\0';
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = '\0';
        const char *name = line, *want = tab + 1;
        snprintf(path, sizeof path, "%s/%s", dir, name);
        files++;
        char err[512] = "";
        ftv_model *m = NULL;
        ftv_status st = ftv_model_load_file(path, &m, err, sizeof err);
        if (!*want) {
            CHECK(st == FTV_OK, "%s: refused: %s", name, err);
            ftv_model_free(m);
            if (st == FTV_OK) check_valid(path), valid++;
            continue;
        }
        CHECK(st != FTV_OK && strcmp(err, want) == 0, "%s:\n  C:      %s\n  Python: %s", name, err, want);
        size_t n = 0;
        unsigned char *buf = slurp(path, &n);
        st = ftv_model_load_buffer(buf, n, &m, err, sizeof err);
        CHECK(st != FTV_OK && m == NULL && strcmp(err, want) == 0, "%s (buffer): %s", name, err);
        free(buf);
    }
    fclose(manifest);
    CHECK(files > 50 && valid >= 2, "only %d files (%d valid) in %s", files, valid, dir);
    printf("test_loader: %d files (%d valid), %s\n", files, valid, failures ? "FAILED" : "all as the Python reader");
    return failures ? 1 : 0;
}
