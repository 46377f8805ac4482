// SPDX-License-Identifier: GPL-2.0
/* bpfproxy.o without the pre-filter, for bench/datapath.ts only: the path every packet took
 * before it, measured beside the real program in the same run. */
#define BPX_NO_PREFILTER
#include "../bpfproxy.bpf.c"
