/* Target-independent half of the ports: markers, heap and stack accounting. The linker scripts
 * of both ports define the symbols below with the same names. */
#include "port.h"

#include <errno.h>

extern char __data_start[], __bss_end[];   /* static RAM: .data then .bss */
extern char __heap_start[], __heap_end[];  /* heap, then the stack up to __stack_top */
extern char __stack_top[];

#define PAINT 0xA5C3E1F0u /* unlikely as data; written in whole words */

static volatile int last_mark;

__attribute__((noinline, used)) void port_mark(int id) { last_mark = id; }

static char *brk_now = __heap_start;
static char *brk_peak = __heap_start;

void *port_sbrk(ptrdiff_t incr) {
    if (incr > __heap_end - brk_now || incr < __heap_start - brk_now) {
        errno = ENOMEM;
        return (void *)-1;
    }
    char *prev = brk_now;
    brk_now += incr;
    if (brk_now > brk_peak) brk_peak = brk_now;
    return prev;
}

size_t port_heap_peak(void) { return (size_t)(brk_peak - __heap_start); }

size_t port_static_bytes(void) { return (size_t)(__bss_end - __data_start); }

size_t port_stack_reserved(void) { return (size_t)(__stack_top - __heap_end); }

__attribute__((noinline)) void port_stack_paint(void) {
    volatile uint32_t here = 0;
    /* 256 bytes below this frame's local: clear of everything this function has live */
    uintptr_t lo = ((uintptr_t)__heap_end + 3u) & ~(uintptr_t)3u;
    uintptr_t hi = ((uintptr_t)&here - 256u) & ~(uintptr_t)3u;
    for (volatile uint32_t *p = (volatile uint32_t *)lo; (uintptr_t)p < hi; p++) *p = PAINT;
}

size_t port_stack_peak(void) {
    uintptr_t lo = ((uintptr_t)__heap_end + 3u) & ~(uintptr_t)3u;
    const volatile uint32_t *p = (const volatile uint32_t *)lo;
    while ((uintptr_t)p < (uintptr_t)__stack_top && *p == PAINT) p++;
    return (size_t)((uintptr_t)__stack_top - (uintptr_t)p);
}
