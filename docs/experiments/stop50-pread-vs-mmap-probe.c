/* pread of 500 bytes at random offsets of a cached segment file against a read through a
 * shared map (a page fault per new page; the map emptied with MADV_DONTNEED every 4,096 reads
 * to bound its resident pages), docs/performance.md "Engine round 33".
 *   gcc -O2 stop50-pread-vs-mmap-probe.c -o probe && ./probe /tmp/vb/0000000030.seg */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <string.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int fd=open(argv[1],O_RDONLY|O_NOATIME); struct stat st; fstat(fd,&st);
  size_t n=st.st_size; int N=400000; char buf[4096]; unsigned long long x=88172645463325252ULL; volatile unsigned s=0;
  size_t *offs=malloc(N*sizeof(size_t)); for(int i=0;i<N;i++){x^=x<<13;x^=x>>7;x^=x<<17; offs[i]=x%(n-700);}
  // warm page cache
  for(size_t o=0;o<n;o+=1<<20){pread(fd,buf,1,o);} 
  double t=now(); for(int i=0;i<N;i++){pread(fd,buf,500,offs[i]); s+=buf[0];} double tp=now()-t;
  char*m=mmap(0,n,PROT_READ,MAP_SHARED,fd,0); madvise(m,n,MADV_RANDOM);
  t=now(); for(int i=0;i<N;i++){memcpy(buf,m+offs[i],500); s+=buf[0]; if((i&4095)==4095) madvise(m,n,MADV_DONTNEED);} double tm=now()-t;
  munmap(m,n); m=mmap(0,n,PROT_READ,MAP_SHARED,fd,0); madvise(m,n,MADV_NORMAL);
  t=now(); for(int i=0;i<N;i++){memcpy(buf,m+offs[i],500); s+=buf[0]; if((i&4095)==4095) madvise(m,n,MADV_DONTNEED);} double tn=now()-t;
  printf("file %zu MB: pread %.2f us, mmap RANDOM+dontneed %.2f us, mmap NORMAL+dontneed %.2f us\n", n>>20, tp/N*1e6, tm/N*1e6, tn/N*1e6);
}
