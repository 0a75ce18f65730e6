/* picolibc glue for QEMU's Xtensa `sim` machine: semihosting through `simcall` (the Xtensa
 * ISS numbering). stdout/stderr -> SYS_write(1), _exit(n) -> SYS_exit(n), which ends QEMU with
 * status n; sbrk -> port_sbrk (bounded by the linker script, peak recorded). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "port.h"

#define SYS_exit 1
#define SYS_write 4

static int simcall(int nr, int a, int b, int c) {
    register int a2 __asm__("a2") = nr;
    register int a3 __asm__("a3") = a;
    register int a4 __asm__("a4") = b;
    register int a5 __asm__("a5") = c;
    __asm__ volatile("simcall" : "+r"(a2), "+r"(a3) : "r"(a4), "r"(a5) : "memory");
    return a2;
}

/* line-buffered: one simcall per line rather than per character */
static char obuf[128];
static unsigned olen;

static int sim_flush(FILE *f) {
    (void)f;
    if (olen) simcall(SYS_write, 1, (int)(uintptr_t)obuf, (int)olen);
    olen = 0;
    return 0;
}

static int sim_putc(char c, FILE *f) {
    obuf[olen++] = c;
    if (c == '\n' || olen == sizeof obuf) sim_flush(f);
    return (unsigned char)c;
}

static FILE sim_stdio = FDEV_SETUP_STREAM(sim_putc, NULL, sim_flush, _FDEV_SETUP_WRITE);
FILE *const stdin = &sim_stdio;
FILE *const stdout = &sim_stdio;
FILE *const stderr = &sim_stdio;

void _exit(int code) {
    sim_flush(NULL);
    for (;;) simcall(SYS_exit, code, 0, 0);
}

void *sbrk(ptrdiff_t incr) { return port_sbrk(incr); }

void xt_fault(unsigned cause, unsigned epc, unsigned vaddr, unsigned ps) {
    printf("*** Xtensa exception: EXCCAUSE=%u EPC1=0x%08x EXCVADDR=0x%08x PS=0x%x\n", cause, epc, vaddr, ps);
    _exit(127);
}
