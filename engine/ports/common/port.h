/* What the bare-metal ports (arm/, xtensa/) give a program besides libc: instruction-count
 * markers, and the measurements behind "peak RAM" (heap and stack high-water marks). */
#ifndef FTV_PORT_H
#define FTV_PORT_H

#include <stddef.h>
#include <stdint.h>

/* A call the instruction counter watches (plugin/insncount.c, mark=<address of port_mark>):
 * the difference of the counts at two calls is the exact cost of the code between them. */
void port_mark(int id);

/* Fill the unused part of the stack (below the caller's frame) with a pattern; call it first
 * in main. port_stack_peak() then finds the deepest word that was overwritten since. */
void port_stack_paint(void);
size_t port_stack_peak(void); /* bytes from the top of the stack to the deepest write */

size_t port_heap_peak(void);   /* the heap's high-water mark (sbrk), bytes */
size_t port_static_bytes(void); /* .data + .bss */
size_t port_stack_reserved(void);

/* Called by the ports' sbrk: the heap [__heap_start, __heap_end) grows by incr bytes. */
void *port_sbrk(ptrdiff_t incr);

#endif
