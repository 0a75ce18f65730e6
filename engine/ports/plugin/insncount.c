/* insncount: exact, deterministic count of the guest instructions a qemu-system-* 7.2 run
 * executes (one vCPU), with optional markers that split the count into regions.
 *
 *   qemu-system-... -plugin libinsncount.so[,mark=0xADDR][,outfile=FILE] ...
 *
 * Every translated instruction gets an inline counter increment, so the count stays exact
 * when a translation block is left early (a semihosting call, an exception). With mark=ADDR
 * (the address of a marker function in the guest, e.g. port_mark from nm), the running count
 * is also recorded each time the instruction at ADDR executes: the difference of two marks
 * is the cost of the code between the two calls, whatever the startup and printing cost.
 *
 * Output at exit, to FILE or to QEMU's log (stderr with -d plugin):
 *   insns: N          the whole run
 *   mark: N           one line per marker hit, in order (instructions executed before it)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu-plugin-min.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_MARKS 256

static uint64_t insn_count;
static uint64_t mark_addr = UINT64_MAX; /* none */
static uint64_t marks[MAX_MARKS];
static unsigned n_marks;
static char outfile[512];

static void on_mark(unsigned int vcpu, void *udata) {
    (void)vcpu, (void)udata;
    if (n_marks < MAX_MARKS) marks[n_marks] = insn_count;
    n_marks++;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        /* the callback is emitted before the increment: it sees the count before the marker */
        if (qemu_plugin_insn_vaddr(insn) == mark_addr)
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_mark, QEMU_PLUGIN_CB_NO_REGS, NULL);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count, 1);
    }
}

static void at_exit(qemu_plugin_id_t id, void *p) {
    (void)id, (void)p;
    size_t cap = 64 + 32 * (size_t)MAX_MARKS, len = 0;
    char *buf = malloc(cap);
    if (!buf) return;
    len += (size_t)snprintf(buf + len, cap - len, "insns: %" PRIu64 "\n", insn_count);
    for (unsigned i = 0; i < n_marks && i < MAX_MARKS; i++)
        len += (size_t)snprintf(buf + len, cap - len, "mark: %" PRIu64 "\n", marks[i]);
    if (n_marks > MAX_MARKS)
        snprintf(buf + len, cap - len, "marks dropped: %u\n", n_marks - MAX_MARKS);
    FILE *f = outfile[0] ? fopen(outfile, "w") : NULL;
    if (f) {
        fputs(buf, f);
        fclose(f);
    } else {
        qemu_plugin_outs(buf);
    }
    free(buf);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "outfile=", 8)) {
            snprintf(outfile, sizeof outfile, "%s", argv[i] + 8);
        } else if (!strncmp(argv[i], "mark=", 5)) {
            char *end;
            mark_addr = strtoull(argv[i] + 5, &end, 0);
            if (*end) {
                fprintf(stderr, "insncount: bad address in %s\n", argv[i]);
                return -1;
            }
        } else {
            fprintf(stderr, "insncount: unknown option %s (expected mark=ADDR, outfile=FILE)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
