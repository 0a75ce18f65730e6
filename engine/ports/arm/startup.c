/* Cortex-M startup for QEMU's mps2/mps3 boards with newlib + librdimon (semihosting):
 * vector table, FPU/MVE enable, .data copy, .bss clear, then exit(main()). Output goes to the
 * host through semihosting (printf -> SYS_WRITE), and exit(n) ends QEMU with status n.
 * Link with --specs=rdimon.specs -nostartfiles -T <board>.ld. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "port.h"

extern char __stack_top[], __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern int main(void);
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);

static int semihost(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

/* Any fault or unexpected interrupt ends the run with status 127 instead of hanging QEMU. */
void Fault_Handler(void) {
    semihost(0x04 /* SYS_WRITE0 */, "*** Cortex-M fault (HardFault/MemManage/BusFault/UsageFault)\n");
    const uint32_t args[2] = {0x20026 /* ADP_Stopped_ApplicationExit */, 127};
    semihost(0x20 /* SYS_EXIT_EXTENDED */, args);
    for (;;) {
    }
}

void Reset_Handler(void) {
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    /* CP10/CP11 full access (FPU, and MVE on the M55) before any float instruction */
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    if ((uintptr_t)__data_load != (uintptr_t)__data_start)
        memcpy(__data_start, __data_load, (size_t)(__data_end - __data_start));
    memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
    initialise_monitor_handles(); /* stdin/stdout/stderr on the semihosting console */
    __libc_init_array();
    exit(main());
}

/* __libc_init_array calls these; -nostartfiles leaves out crti/crtn */
void _init(void) {}
void _fini(void) {}

/* newlib's malloc grows the heap here (overrides librdimon's weak _sbrk, which checks only
 * against the stack pointer); port_sbrk bounds it by the linker script and records the peak. */
void *_sbrk(ptrdiff_t incr) { return port_sbrk(incr); }

typedef void (*handler)(void);

__attribute__((section(".vectors"), used)) const handler vector_table[16] = {
    (handler)(uintptr_t)__stack_top, /* initial SP */
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    Fault_Handler, /* SecureFault (v8-M) */
    0, 0, 0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,
    Fault_Handler, /* PendSV */
    Fault_Handler, /* SysTick */
};
