# Shared by the benchmark scripts (bench-fanout.sh, bench-ingest.sh,
# bench-hls.sh); sourced after they set BENCH (their name, for messages and
# the state directory). Gives STATE (a temporary directory removed on exit),
# pids (append the PID of each process a script starts, `pids+=($!)`; they are stopped
# in reverse order on exit), on_exit (commands run at exit after the
# processes are stopped, last registered first), fail, wait_http and
# bench_build.
STATE=$(mktemp -d "/tmp/livecluster-$BENCH.XXXXXX")
pids=()
exits=()
# on_exit command...: run the command (one string, eval'd) at exit, also
# after a failure or an interrupt.
on_exit() { exits+=("$*"); }
cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
  done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    wait "${pids[$i]}" 2>/dev/null || true
  done
  for ((i = ${#exits[@]} - 1; i >= 0; i--)); do
    eval "${exits[$i]}" || echo "$BENCH: at exit, failed: ${exits[$i]}" >&2
  done
  rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# fail prints why, the last lines of every log in STATE, and exits 1.
fail() {
  echo "$BENCH: $*" >&2
  for f in "$STATE"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -5 "$f"; } >&2; done
  exit 1
}

# wait_http url pid what: until url answers 2xx, for at most 30 s, failing
# at once if pid exited.
wait_http() {
  local i
  for i in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || fail "$3 exited at start"
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "$3 not ready at $1 within 30 s"
}

# bench_build binary...: builds the named binaries (ocm origin edge loadgen
# floor) into ./bin.
bench_build() {
  echo "building" >&2
  mkdir -p bin
  local b
  for b in "$@"; do
    case $b in
      ocm | origin | edge) (cd "$b" && go build -o "$ROOT/bin/$b" "./cmd/$b") ;;
      loadgen) (cd scripts/loadgen && go build -o "$ROOT/bin/loadgen" .) ;;
      floor) (cd scripts/loadgen && go build -o "$ROOT/bin/floor" ./cmd/floor) ;;
      *) fail "bench_build: unknown binary $b" ;;
    esac
  done
}

# perf_split perf.data server_comm: where one core's time went, from a
# `perf record -a -C CPU -g` of that core (cpu-clock samples), as one JSON
# object. "all" holds fractions of all the core's samples, "server" of the
# samples whose task was server_comm (what /proc/PID/stat charges to the
# server: with tick accounting and no IRQ time accounting, softirq work
# done in a task's context counts as that task's system time), by class:
#   user          user space
#   send          the send path in the kernel (writev/sendmsg, TCP/IP
#                 output, the copy, loopback_xmit) — the sender's own work
#   rx_data       receive processing of data segments: the receiving
#                 socket's side (tcp_rcv_established → queueing,
#                 sock_def_readable / ep_poll_callback, waking the reader,
#                 the receiver's ACK) — on loopback without RPS it runs in
#                 softirq on the SENDER's core, so a server's core does
#                 its players' receive work
#   rx_ack        receive processing of ACKs for the sender's sockets
#                 (tcp_ack, tcp_clean_rtx_queue and what it releases)
#   rx_other      receive path not attributable to either (backlog, IP,
#                 freeing skbs)
#   rx_ipi        handing received packets to another core's backlog
#                 (RPS/RFS: net_rps_send_ipi; in a VM each IPI is an exit
#                 to the hypervisor)
#   recv          the read path of a syscall (tcp_recvmsg: the sampled
#                 process reading its own sockets)
#   sched         scheduler, futex, epoll and other kernel work
#   idle          the idle task (without softirq work)
# "server_share" is the server's part of the core's samples and
# "rx_in_ksoftirqd" the receive work the core did in ksoftirqd (charged to
# no server). Markers are kernel symbols; a sample is put in the first
# class whose markers its call chain holds, in the order rx_ipi, rx, send,
# recv, user, idle, sched.
perf_split() {
  perf script -i "$1" -F comm,pid,ip,sym,dso 2>/dev/null | awk -v server="$2" '
    function classify(   c) {
      if (n == 0) return
      total++
      if (stack ~ / (net_rps_send_ipi) /) c = "rx_ipi"
      else if (stack ~ / (net_rx_action|process_backlog|__netif_receive_skb|__netif_receive_skb_core|ip_rcv|ip_local_deliver|tcp_v4_rcv|ip_list_rcv) /) {
        if (stack ~ / (tcp_ack|tcp_clean_rtx_queue|tcp_rearm_rto|tcp_ack_update_rtt) / && stack !~ / (tcp_data_queue|tcp_queue_rcv|sock_def_readable|ep_poll_callback|tcp_event_data_recv) /) c = "rx_ack"
        else if (stack ~ / (tcp_data_queue|tcp_queue_rcv|tcp_rcv_established|sock_def_readable|ep_poll_callback|tcp_event_data_recv|__tcp_ack_snd_check|tcp_send_ack|__tcp_send_ack|tcp_v4_do_rcv|tcp_add_backlog|try_to_wake_up) /) c = "rx_data"
        else c = "rx_other"
      } else if (stack ~ / (tcp_sendmsg|tcp_sendmsg_locked|sock_write_iter|do_writev|sock_sendmsg|____sys_sendmsg|__sys_sendto|tcp_write_xmit|__tcp_push_pending_frames|tcp_push|do_iter_writev|vfs_writev) /) c = "send"
      else if (stack ~ / (tcp_recvmsg|tcp_recvmsg_locked|sock_read_iter|sock_recvmsg) /) c = "recv"
      else if (!kern) c = "user"
      else if (comm == "swapper") c = "idle"
      else c = "sched"
      all[c]++
      if (comm == server) { srv[c]++; nsrv++ }
      if (comm ~ /^ksoftirqd/ && c ~ /^rx_/) ksirq++
    }
    /^[^ \t]/ { classify(); n = 0; stack = " "; comm = $1; kern = -1; next }
    /^[ \t]+[0-9a-f]+ / {
      sym = $2; sub(/\+0x[0-9a-f]+$/, "", sym)
      if (kern < 0) kern = ($NF == "([kernel.kallsyms])")
      stack = stack sym " "; n++
      next
    }
    function obj(a, tot,   i, s) {
      s = "{"
      for (i = 1; i <= 9; i++) s = s (i > 1 ? ", " : "") sprintf("\"%s\": %.3f", k[i], tot ? a[k[i]] / tot : 0)
      return s "}"
    }
    END {
      classify()
      split("user send rx_data rx_ack rx_other rx_ipi recv sched idle", k, " ")
      printf "{\"samples\": %d, \"server_share\": %.3f, \"rx_in_ksoftirqd\": %.3f, \"all\": %s, \"server\": %s}\n",
        total, total ? nsrv / total : 0, total ? ksirq / total : 0, obj(all, total), obj(srv, nsrv)
    }'
}

# perf_concurrency perf.data comm: whether one process ran on both cores
# at once, from a `perf record -a -C 0,1` (cpu-clock samples, no call
# chains needed), as JSON: "cpu_share" (the process's samples per core, as
# fractions of its samples), "both_of_busy" (of the 1 ms intervals in which
# it ran at all, the part in which it ran on both cores; 0 for a process
# that never runs on two cores at once, about 1 for one that keeps both
# busy) and "kernel_send_both" the same for the intervals with its send
# path (writev) in the kernel: the fan-out writes themselves on both
# cores at once; "both_if_independent" is what both_of_busy would be if
# the process's presence on each core were independent of the other's,
# at the same per-core occupancy (the players share the cores, so the
# process cannot be on both all the time): both_of_busy well under it
# means something serializes it (one thread at a time), at or over it
# means it runs on two cores as freely as the cores allow.
perf_concurrency() {
  perf script -i "$1" -F comm,cpu,time,ip,sym 2>/dev/null | awk -v want="$2" '
    function flush() {
      if (comm == want) {
        n[cpu]++; tot++
        busy[bin] = busy[bin] (index(busy[bin], "c" cpu) ? "" : "c" cpu)
        if (send) sendb[bin] = sendb[bin] (index(sendb[bin], "c" cpu) ? "" : "c" cpu)
      }
    }
    /^[^ \t]/ {
      if (have) flush()
      have = 1; comm = $1; send = 0
      match($0, /\[[0-9]+\]/); cpu = substr($0, RSTART + 1, RLENGTH - 2) + 0
      match($0, /[0-9]+\.[0-9]+:/); bin = int(substr($0, RSTART, RLENGTH - 1) * 1000)
      if (first == "" || bin < first) first = bin
      if (bin > last) last = bin
      next
    }
    /(tcp_sendmsg|do_writev|sock_write_iter)/ { send = 1 }
    END {
      if (have) flush()
      for (b in busy) { nb++; if (length(busy[b]) > 2) both++; else if (busy[b] == "c0") only0++; else only1++ }
      # occupancy of each core by the process over all the recorded bins
      bins = last - first + 1; p0 = bins > 0 ? (only0 + both) / bins : 0; p1 = bins > 0 ? (only1 + both) / bins : 0
      ind = (p0 + p1 - p0 * p1) > 0 ? p0 * p1 / (p0 + p1 - p0 * p1) : 0
      for (b in sendb) { ns++; if (length(sendb[b]) > 2) sboth++ }
      printf "{\"samples\": %d, \"cpu_share\": {", tot
      sep = ""; for (c in n) { printf "%s\"%s\": %.3f", sep, c, n[c] / tot; sep = ", " }
      printf "}, \"both_of_busy\": %.3f, \"both_if_independent\": %.3f, \"kernel_send_both\": %.3f}\n", nb ? both / nb : 0, ind, ns ? sboth / ns : 0
    }'
}
