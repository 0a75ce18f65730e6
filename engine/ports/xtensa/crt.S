/* Reset stub and exception vectors for bare-metal Xtensa (call0 ABI) on QEMU's `sim` machine.
 * QEMU 7.2 starts the core at its reset vector (the start of sysrom for lx106), not at the
 * ELF entry, and with an undefined stack pointer: _reset, linked first in ROM, sets SP, PS and
 * VECBASE, then calls picolibc's _start (crt0-hosted: .data, .bss, init arrays, exit(main())). */

    .section .vectors, "ax"
    .balign 1024
    .global __vecbase
__vecbase:
    /* The vector offsets differ between core configurations (lx106: kernel 0x30, user 0x50,
     * double 0x70, ...): a page of 2-byte NOPs slides into the handler from any of them. */
    .rept 512
    nop.n
    .endr
    rsr a2, exccause
    rsr a3, epc1
    rsr a4, excvaddr
    rsr a5, ps
    movi a0, 0
    j xt_fault                  /* sim.c: prints the cause, exits with status 127 */

    .section .reset.text, "ax"
    .global _reset_vector
_reset_vector:
    j _reset

    .section .entry.text, "ax"  /* its literals go to .entry.literal, linked just before */
    .literal .Lstack, __stack_top
    .literal .Lvecbase, __vecbase
    .literal .Lstart, _start
    .global _reset
    .type _reset, @function
    .balign 4
_reset:
    l32r a1, .Lstack
    l32r a2, .Lvecbase
    wsr a2, vecbase
    movi a2, 0x2f               /* PS: UM=1, EXCM=0, INTLEVEL=15 (no interrupts), WOE=0 (call0) */
    wsr a2, ps
    rsync
    movi a0, 0
    l32r a2, .Lstart
    callx0 a2
1:  j 1b
