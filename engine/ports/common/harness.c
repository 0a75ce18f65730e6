/* mcu-check firmware: run the engine on a model compiled into flash/rodata and one fixed
 * input, and print what mcu_check.py compares and reports.
 *
 * The model (ftv_fw_model) and the input (ftv_fw_input) are C arrays written by
 * `ftervit firmware` / mcu_check.py. ftv_model_load_buffer binds the weights in place: they
 * are read from ROM and never copied; the heap holds only the model's bookkeeping and the
 * arena. Output lines start with "ftv-port " so they can be told apart from anything else
 * on the console; logits are printed as their IEEE bits, which compare exactly. */
#include <stdio.h>
#include <string.h>

#include "ftervit.h"
#include "ftv_fw_input.h"
#include "ftv_fw_model.h"
#include "port.h"

static unsigned long ul(size_t v) { return (unsigned long)v; }

int main(void) {
    port_stack_paint(); /* first: everything after this counts in the stack peak */
    ftv_model *m = NULL;
    char err[200];

    port_mark(0);
    ftv_status st = ftv_model_load_buffer(ftv_fw_model, ftv_fw_model_size, &m, err, sizeof err);
    port_mark(1);
    if (st != FTV_OK) {
        printf("ftv-port error: load: %s: %s\n", ftv_status_string(st), err);
        return 2;
    }
    const ftv_config *c = ftv_model_config(m);
    if ((size_t)c->in_chans * (size_t)c->img_h * (size_t)c->img_w != ftv_fw_input_len) {
        printf("ftv-port error: the input has %lu values, the model takes %d x %d x %d\n",
               ul(ftv_fw_input_len), c->in_chans, c->img_h, c->img_w);
        return 2;
    }
    float logits[c->num_classes];
    size_t heap_loaded = port_heap_peak();

    port_mark(2);
    st = ftv_model_forward(m, ftv_fw_input, logits);
    port_mark(3);
    /* measured before any printf: the peaks are those of load + forward */
    size_t stack_peak = port_stack_peak(), heap_peak = port_heap_peak();

    if (st != FTV_OK) {
        printf("ftv-port error: forward: %s\n", ftv_status_string(st));
        return 2;
    }
    printf("ftv-port model_bytes=%lu arena_bytes=%lu classes=%d kernels=%s\n", ul(ftv_fw_model_size),
           ul(ftv_model_arena_bytes(m)), c->num_classes, ftv_model_kernels(m));
    for (int i = 0; i < c->num_classes; i++) {
        uint32_t bits;
        memcpy(&bits, &logits[i], sizeof bits);
        printf("ftv-port logit %d 0x%08lx\n", i, (unsigned long)bits);
    }
    printf("ftv-port heap_loaded=%lu heap_peak=%lu stack_peak=%lu static=%lu stack_reserved=%lu\n",
           ul(heap_loaded), ul(heap_peak), ul(stack_peak), ul(port_static_bytes()), ul(port_stack_reserved()));
    ftv_model_free(m);
    printf("ftv-port done\n");
    return 0;
}
