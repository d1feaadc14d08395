/* Trampolines for the nccl* functions newer than our header (list: real_extras.h).
 * Each loads its index and jumps to a common dispatcher, which jumps to the real
 * function through snapccl_extra_targets[index]; on first use (target still NULL) it
 * saves the argument registers, lets C resolve every target (snapccl_extra_resolve),
 * restores them and retries. Arguments are never touched, so any signature works.
 * x86-64 System V only. */
#include "real_extras.h"

        .text
        .globl snapccl_extra_dispatch_
        .hidden snapccl_extra_dispatch_
        .type snapccl_extra_dispatch_, @function
snapccl_extra_dispatch_:
        leaq snapccl_extra_targets(%rip), %rax
        movq (%rax,%r11,8), %rax
        testq %rax, %rax
        jz 1f
        jmp *%rax
1:      /* rsp is 8 mod 16 here; 7 pushes make it 0 mod 16 for the call */
        pushq %rdi
        pushq %rsi
        pushq %rdx
        pushq %rcx
        pushq %r8
        pushq %r9
        pushq %r11
        subq $128, %rsp
        movdqu %xmm0, 0(%rsp)
        movdqu %xmm1, 16(%rsp)
        movdqu %xmm2, 32(%rsp)
        movdqu %xmm3, 48(%rsp)
        movdqu %xmm4, 64(%rsp)
        movdqu %xmm5, 80(%rsp)
        movdqu %xmm6, 96(%rsp)
        movdqu %xmm7, 112(%rsp)
        call snapccl_extra_resolve
        movdqu 0(%rsp), %xmm0
        movdqu 16(%rsp), %xmm1
        movdqu 32(%rsp), %xmm2
        movdqu 48(%rsp), %xmm3
        movdqu 64(%rsp), %xmm4
        movdqu 80(%rsp), %xmm5
        movdqu 96(%rsp), %xmm6
        movdqu 112(%rsp), %xmm7
        addq $128, %rsp
        popq %r11
        popq %r9
        popq %r8
        popq %rcx
        popq %rdx
        popq %rsi
        popq %rdi
        leaq snapccl_extra_targets(%rip), %rax
        movq (%rax,%r11,8), %rax
        jmp *%rax
        .size snapccl_extra_dispatch_, .-snapccl_extra_dispatch_

        .set snapccl_extra_index_, 0
.macro SNAPCCL_TRAMPOLINE name
        .globl \name
        .type \name, @function
\name:
        movq $snapccl_extra_index_, %r11
        jmp snapccl_extra_dispatch_
        .size \name, .-\name
        .globl p\name
        .type p\name, @function
        .set p\name, \name
        .set snapccl_extra_index_, snapccl_extra_index_ + 1
.endm

#define SNAPCCL_EMIT_TRAMPOLINE(name, returns) SNAPCCL_TRAMPOLINE name;
        SNAPCCL_EXTRA_FUNCTIONS(SNAPCCL_EMIT_TRAMPOLINE)

        .section .note.GNU-stack,"",@progbits
