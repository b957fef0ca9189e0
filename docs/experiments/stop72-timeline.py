"""Stop 72: read /tmp/trace.txt written by the timeline patch (docs/experiments/stop72-writer-tenure-and-timeline.patch,
run with PDB_TRACE=1) and print how busy the syncs and the appliers were, and the gaps between them."""
import sys
ev=[l.split() for l in open('/tmp/trace.txt')]
ev=[(k,int(t),int(n)) for k,t,n in ev]
ev.sort(key=lambda e:e[1])
t0=ev[0][1]; t1=ev[-1][1]; T=t1-t0
def intervals(a,b):
    out=[];st=None
    for k,t,n in ev:
        if k==a: st=t
        elif k==b and st is not None: out.append((st,t)); st=None
    return out
sy=intervals('S','E'); ap=intervals('G','H')
print("span ms",T/1e6,"syncs",len(sy),"groups",len(ap))
print("sync busy %.1f%%  apply busy %.1f%%"%(100*sum(b-a for a,b in sy)/T,100*sum(b-a for a,b in ap)/T))
import statistics as st
g=[b[0]-a[1] for a,b in zip(sy,sy[1:])]
print("E->next S gap us p50 %.0f mean %.0f"%(st.median(g)/1e3,st.mean(g)/1e3))
print("sync dur us p50 %.0f mean %.0f"%(st.median([b-a for a,b in sy])/1e3,st.mean([b-a for a,b in sy])/1e3))
g=[b[0]-a[1] for a,b in zip(ap,ap[1:])]
print("H->next G gap us p50 %.0f mean %.0f"%(st.median(g)/1e3,st.mean(g)/1e3))
print("apply dur us p50 %.0f mean %.0f"%(st.median([b-a for a,b in ap])/1e3,st.mean([b-a for a,b in ap])/1e3))
G=[n for k,t,n in ev if k=='G']; H=[n for k,t,n in ev if k=='H']
print("group start mean %.1f, at handoff mean %.1f"%(st.mean(G),st.mean(H)))
az=intervals('A','Z')
print("answering dur us mean %.1f"%(st.mean([b-a for a,b in az])/1e3))
