/* Case openssl-cfa-expr of issue 10, standing for libunwind/libunwind#263 (OpenSSL bn_mul_mont CFA expressions), openssl/openssl#2291 and #2305. */
/* Hand-written hot loop whose unwind info uses what OpenSSL's perlasm emits:
   a CFA based on a scratch register (rax) and then a DW_CFA_def_cfa_expression
   that reads another register (r9). rbp is used as a plain data register. */
        .text
        .globl  spin_asm
        .type   spin_asm,@function
spin_asm:                       /* rdi = iterations per phase */
        .cfi_startproc
        mov     %rsp, %rax
        .cfi_def_cfa_register %rax          /* CFA = rax + 8 */
        push    %rbx
        .cfi_offset %rbx, -16
        push    %rbp
        .cfi_offset %rbp, -24
        xor     %ebp, %ebp                  /* rbp = 0: not a frame pointer */
        mov     %rdi, %rcx
        mov     $1, %rbx
1:      imul    $3, %rbx, %rbx              /* phase A: CFA = rax + 8 */
        add     %rcx, %rbx
        dec     %rcx
        jnz     1b
        mov     $5, %r9                     /* phase B: variable-size frame */
        lea     16(,%r9,8), %rdx
        sub     %rdx, %rsp
        and     $-64, %rsp
        mov     %rax, (%rsp,%r9,8)          /* saved CFA-8 at rsp + 8*r9 */
        /* DW_CFA_def_cfa_expression: *(rsp + 8*r9) + 8 */
        .cfi_escape 0x0f, 10, 0x77, 0x00, 0x79, 0x00, 0x38, 0x1e, 0x22, 0x06, 0x23, 0x08
        mov     %rdi, %rcx
        mov     $7, %rbp
2:      imul    $5, %rbx, %rbx
        add     %rcx, %rbx
        add     %rbx, %rbp
        dec     %rcx
        jnz     2b
        mov     (%rsp,%r9,8), %rsi
        .cfi_def_cfa %rsi, 8
        mov     -8(%rsi), %rbx
        .cfi_restore %rbx
        mov     -16(%rsi), %rbp
        .cfi_restore %rbp
        lea     (%rsi), %rsp
        .cfi_def_cfa %rsp, 8
        mov     %rbx, %rax
        ret
        .cfi_endproc
        .size   spin_asm, .-spin_asm
        .section .note.GNU-stack,"",@progbits
