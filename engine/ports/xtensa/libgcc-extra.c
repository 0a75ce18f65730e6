/* 64-bit integer helpers missing from Debian's gcc-xtensa-lx106 libgcc.a (on an ESP8266 they
 * are in the mask ROM, so the package leaves them out). The single-word and soft-float ones
 * come from gcc's own libgcc/config/xtensa/lib1funcs.S (see the Makefile). */
#include <stdint.h>

extern uint64_t __umulsidi3(uint32_t, uint32_t);                 /* lib1funcs.S */
extern uint64_t __udivmoddi4(uint64_t, uint64_t, uint64_t *);    /* in libgcc.a */
extern int64_t __divmoddi4(int64_t, int64_t, int64_t *);         /* in libgcc.a */

uint64_t __muldi3(uint64_t a, uint64_t b);
uint64_t __udivdi3(uint64_t a, uint64_t b);
uint64_t __umoddi3(uint64_t a, uint64_t b);
int64_t __divdi3(int64_t a, int64_t b);

uint64_t __muldi3(uint64_t a, uint64_t b) {
    uint32_t al = (uint32_t)a, ah = (uint32_t)(a >> 32), bl = (uint32_t)b, bh = (uint32_t)(b >> 32);
    uint64_t lo = __umulsidi3(al, bl); /* the high halves only matter mod 2^32 */
    uint32_t hi = (uint32_t)(lo >> 32) + al * bh + ah * bl;
    return ((uint64_t)hi << 32) | (uint32_t)lo;
}

uint64_t __udivdi3(uint64_t a, uint64_t b) { return __udivmoddi4(a, b, 0); }

uint64_t __umoddi3(uint64_t a, uint64_t b) {
    uint64_t r;
    __udivmoddi4(a, b, &r);
    return r;
}

int64_t __divdi3(int64_t a, int64_t b) {
    int64_t r;
    return __divmoddi4(a, b, &r);
}

