# Concurrent fdatasync on one preallocated file: 1, 2 and 4 threads each writing 10 KB at
# its own offset then fdatasync; syncs per second and p50 (docs/performance.md, round 39).
# Run: python3 docs/experiments/stop56-concurrent-fdatasync-probe.py (writes /tmp/fsync_par.test).
import os, threading, time, sys
def run(nthreads, size=10000, dur=3.0):
    p='/tmp/fsync_par.test'
    if os.path.exists(p): os.remove(p)
    fd=os.open(p, os.O_WRONLY|os.O_CREAT, 0o644)
    total=size*20000
    os.posix_fallocate(fd, 0, total); os.fsync(fd)
    lock=threading.Lock(); pos=[0]; counts=[0]*nthreads; lat=[]
    stop=time.perf_counter()+dur
    buf=b'x'*size
    def worker(i):
        while time.perf_counter()<stop:
            with lock:
                off=pos[0]; pos[0]+=size
            a=time.perf_counter()
            os.pwrite(fd, buf, off % total)
            os.fdatasync(fd)
            lat.append(time.perf_counter()-a)
            counts[i]+=1
    ts=[threading.Thread(target=worker,args=(i,)) for i in range(nthreads)]
    [t.start() for t in ts]; [t.join() for t in ts]
    os.close(fd)
    lat.sort()
    n=sum(counts)
    print(f"threads {nthreads} size {size}: {n/dur:.0f} syncs/s, p50 {lat[len(lat)//2]*1e6:.0f} us")
if __name__ == "__main__":
  for n in (1,2,4):
    run(n)
  os.remove("/tmp/fsync_par.test")
