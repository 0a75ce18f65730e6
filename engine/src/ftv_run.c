/* ftervit-run: classify images with a .ftv model.
 *
 *   ftervit-run [-k N] [-t THREADS] [--logits] [--rollout] MODEL.ftv INPUT...
 *
 * INPUT is a binary PPM (P6) or PGM (P5) image of exactly the model's size (8 or 16 bits a
 * sample), normalized with the file's mean/std, or a raw float32 tensor (C, H, W) already
 * normalized (any other extension). `ftervit run` (Python) decodes any image format and
 * resizes it first. Every input is tried; each one refused is named on stderr.
 * Exit status: 0 all inputs classified; 1 the model could not be loaded (or no memory);
 * 2 a usage error, or an input refused (unreadable, wrong size, NaN or infinite values). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftervit.h"

static int read_token(FILE *f, long *v) { /* PNM header number, skipping blanks and comments */
    int c = fgetc(f);
    while (c != EOF && (isspace(c) || c == '#')) {
        if (c == '#') while (c != EOF && c != '\n') c = fgetc(f);
        c = fgetc(f);
    }
    if (c == EOF || !isdigit(c)) return 0;
    *v = 0;
    while (c != EOF && isdigit(c)) {
        if (*v > 100000000L) return 0;
        *v = *v * 10 + (c - '0');
        c = fgetc(f);
    }
    return 1; /* c, the single whitespace after the number, is consumed */
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Fill `img` (C, H, W) from `path`; returns 0 and prints why on failure. */
static int load_input(const char *path, const ftv_config *c, float *img) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ftervit-run: cannot open %s: %s\n", path, strerror(errno));
        return 0;
    }
    errno = 0; /* a directory opens on POSIX systems but does not read: ask before sizing it */
    if (fgetc(f) == EOF && ferror(f)) {
        fprintf(stderr, "ftervit-run: cannot read %s: %s\n", path, errno ? strerror(errno) : "read error");
        fclose(f);
        return 0;
    }
    rewind(f);
    size_t n = (size_t)c->in_chans * c->img_h * c->img_w;
    int ok = 0;
    if (ends_with(path, ".ppm") || ends_with(path, ".pgm")) {
        char magic[2];
        long w, h, maxval;
        if (fread(magic, 1, 2, f) != 2 || magic[0] != 'P' || (magic[1] != '5' && magic[1] != '6') ||
            !read_token(f, &w) || !read_token(f, &h) || !read_token(f, &maxval) || maxval < 1 || maxval > 65535) {
            fprintf(stderr, "ftervit-run: %s: not a binary PPM/PGM (P6/P5, maxval 1..65535)\n", path);
        } else if (w != c->img_w || h != c->img_h) {
            fprintf(stderr, "ftervit-run: %s is %ldx%ld, the model takes %dx%d: resize it (ftervit run does)\n",
                    path, w, h, c->img_w, c->img_h);
        } else {
            const int src_c = magic[1] == '6' ? 3 : 1, bytes = maxval > 255 ? 2 : 1; /* 16 bits: big-endian */
            const size_t px = (size_t)w * (size_t)h, len = px * (size_t)src_c * (size_t)bytes;
            unsigned char *buf = (unsigned char *)malloc(len);
            if (buf && fread(buf, 1, len, f) == len) {
                for (int ch = 0; ch < c->in_chans; ch++)
                    for (size_t i = 0; i < px; i++) {
                        float s[3];
                        for (int k = 0; k < src_c; k++) {
                            const unsigned char *p = buf + (i * (size_t)src_c + (size_t)k) * (size_t)bytes;
                            s[k] = bytes == 2 ? (float)(p[0] << 8 | p[1]) : (float)p[0];
                        }
                        float v = src_c == 1 ? s[0]
                                  : c->in_chans == 1 ? 0.299f * s[0] + 0.587f * s[1] + 0.114f * s[2]
                                                     : s[ch < 3 ? ch : 2];
                        img[(size_t)ch * px + i] = (v / (float)maxval - c->mean[ch]) / c->std[ch];
                    }
                ok = 1;
            } else {
                fprintf(stderr, "ftervit-run: %s: %s\n", path, buf ? "truncated image data" : "out of memory");
            }
            free(buf);
        }
    } else {
        long size = -1;
        if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
        if (size != (long)(n * sizeof(float)) || fseek(f, 0, SEEK_SET) != 0 ||
            fread(img, sizeof(float), n, f) != n)
            fprintf(stderr, "ftervit-run: %s: expected %zu raw float32 values (%d x %d x %d), got %ld bytes\n",
                    path, n, c->in_chans, c->img_h, c->img_w, size);
        else
            ok = 1;
    }
    fclose(f);
    return ok;
}

static void print_map(const float *map, int n) {
    for (int p = 0; p < n; p++) printf(p ? " %.9g" : "rollout %.9g", (double)map[p]);
    printf("\n");
}

int main(int argc, char **argv) {
    int topk = 5, threads = 1, print_logits = 0, print_rollout = 0, verbose = 0, fast = 0, argi = 1;
    for (; argi < argc && argv[argi][0] == '-'; argi++) {
        if (strcmp(argv[argi], "-k") == 0 && argi + 1 < argc) topk = atoi(argv[++argi]);
        else if (strcmp(argv[argi], "-t") == 0 && argi + 1 < argc) threads = atoi(argv[++argi]);
        else if (strcmp(argv[argi], "--logits") == 0) print_logits = 1;
        else if (strcmp(argv[argi], "--rollout") == 0) print_rollout = 1;
        else if (strcmp(argv[argi], "-v") == 0) verbose = 1;
        else if (strcmp(argv[argi], "--fast") == 0) fast = 1;
        else break;
    }
    if (argc - argi < 2 || topk < 1 || threads < 1 || threads > FTV_MAX_THREADS) {
        fprintf(stderr, "usage: ftervit-run [-k N] [-t THREADS] [-v] [--fast] [--logits] [--rollout] MODEL.ftv INPUT...\n"
                        "  INPUT: binary PPM/PGM of the model's size, or raw float32 (C,H,W) normalized\n"
                        "  -t: threads of the forward pass, 1..%d (default 1; the logits do not depend on it)\n"
                        "  -v: name the kernel set and the threads on stderr (FTV_KERNELS chooses the set)\n"
                        "  --fast: the fast numerics mode (x86 kernels; docs/engine.md)\n"
                        "  --rollout: also print the attention-rollout map (one line, patch grid row-major)\n",
                FTV_MAX_THREADS);
        return 2;
    }
    char err[256];
    ftv_model *m;
    ftv_status st = ftv_model_load_file(argv[argi], &m, err, sizeof err);
    if (st != FTV_OK) {
        if (strstr(err, argv[argi])) fprintf(stderr, "ftervit-run: %s (%s)\n", err, ftv_status_string(st));
        else fprintf(stderr, "ftervit-run: %s: %s (%s)\n", argv[argi], err, ftv_status_string(st));
        return 1;
    }
    if (threads != 1 && (st = ftv_model_set_threads(m, threads)) != FTV_OK) {
        fprintf(stderr, "ftervit-run: -t %d: %s%s\n", threads, ftv_status_string(st),
                st == FTV_ERR_ARG ? " (this build runs one thread)" : "");
        ftv_model_free(m);
        return 1;
    }
    if (fast && (st = ftv_model_set_numerics(m, FTV_NUMERICS_FAST)) != FTV_OK) {
        fprintf(stderr, "ftervit-run: --fast: %s (the %s kernels have no fast mode)\n", ftv_status_string(st),
                ftv_model_kernels(m));
        ftv_model_free(m);
        return 1;
    }
    if (verbose) fprintf(stderr, "ftervit-run: kernels %s, %d thread%s\n", ftv_model_kernels(m), threads, threads > 1 ? "s" : "");
    const ftv_config *c = ftv_model_config(m);
    float *img = (float *)malloc(sizeof(float) * (size_t)c->in_chans * c->img_h * c->img_w);
    float *logits = (float *)malloc(sizeof(float) * (size_t)c->num_classes);
    int *order = (int *)malloc(sizeof(int) * (size_t)c->num_classes);
    const int patches = (c->img_h / c->patch_h) * (c->img_w / c->patch_w);
    float *map = (float *)malloc(sizeof(float) * (size_t)patches);
    int status = 0;
    if (!img || !logits || !order || !map) {
        fprintf(stderr, "ftervit-run: out of memory for a %dx%dx%d input\n", c->in_chans, c->img_h, c->img_w);
        status = 1;
    }
    for (int i = argi + 1; i < argc && status != 1; i++) {
        if (!load_input(argv[i], c, img)) {
            status = 2;
            continue;
        }
        st = print_rollout ? ftv_model_forward_rollout(m, img, logits, map) : ftv_model_forward(m, img, logits);
        if (st != FTV_OK) {
            fprintf(stderr, "ftervit-run: %s: %s\n", argv[i], ftv_status_string(st));
            status = 2;
            continue;
        }
        if (print_logits) {
            for (int j = 0; j < c->num_classes; j++) printf(j ? " %.9g" : "%.9g", (double)logits[j]);
            printf("\n");
            if (print_rollout) print_map(map, patches);
            continue;
        }
        float mx = logits[0], sum = 0.0f;
        for (int j = 1; j < c->num_classes; j++) if (logits[j] > mx) mx = logits[j];
        for (int j = 0; j < c->num_classes; j++) sum += expf(logits[j] - mx);
        for (int j = 0; j < c->num_classes; j++) order[j] = j;
        int k = topk < c->num_classes ? topk : c->num_classes;
        for (int a = 0; a < k; a++) /* partial selection sort: k is small */
            for (int b = a + 1; b < c->num_classes; b++)
                if (logits[order[b]] > logits[order[a]]) {
                    int t = order[a];
                    order[a] = order[b];
                    order[b] = t;
                }
        printf("%s\n", argv[i]);
        for (int a = 0; a < k; a++) {
            const char *name = ftv_model_class_name(m, order[a]);
            printf("  %d. class %d%s%s%s  p=%.4f  logit=%.4f\n", a + 1, order[a], name ? " (" : "",
                   name ? name : "", name ? ")" : "", (double)(expf(logits[order[a]] - mx) / sum),
                   (double)logits[order[a]]);
        }
        if (print_rollout) print_map(map, patches);
    }
    free(img);
    free(logits);
    free(order);
    free(map);
    ftv_model_free(m);
    return status;
}
