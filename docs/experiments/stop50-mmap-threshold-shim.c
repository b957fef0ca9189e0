/* Which frees raise glibc's mmap threshold: an LD_PRELOAD wrapper of free() that prints the
 * size and a backtrace of each block malloc had mapped itself (128 KiB .. 32 MiB) when it is
 * larger than every such block freed before (docs/performance.md, "Engine round 33").
 *   gcc -O2 -shared -fPIC stop50-mmap-threshold-shim.c -o shim.so -ldl
 *   LD_PRELOAD=./shim.so peers/target/release/compare --child pdb-group --dir /tmp/s --calls 1000000 2>frees.txt
 * then resolve the addresses with addr2line -f -C -i -e peers/target/release/compare. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
static void (*real_free)(void*)=0;
static size_t maxseen=128*1024;
static __thread int in=0;
void free(void*p){
  if(!real_free) real_free=dlsym(RTLD_NEXT,"free");
  if(p && !in){
    size_t sz=((size_t*)p)[-1];
    if((sz&2) && (sz&~7UL)>maxseen && (sz&~7UL)<=32UL<<20){
      in=1; maxseen=sz&~7UL;
      char msg[64]; int n=snprintf(msg,64,"FREE-MMAPPED %zu\n",maxseen); write(2,msg,n);
      void*bt[12]; int k=backtrace(bt,12); backtrace_symbols_fd(bt,k,2); write(2,"--\n",3);
      in=0;
    }
  }
  real_free(p);
}
