// Diagnostic for memory per connection (bench/RESULTS.md, issue 9): an LD_PRELOAD shim that
// tracks live heap allocations (pointer -> size) and, on SIGUSR2, appends to $LIVEHEAP_OUT
// (default /tmp/liveheap.txt) the live allocations by size (sizes holding >= 64 KiB in all).
// Signal once before opening N idle connections and once while they are held: the sizes that
// appear N times are what each connection holds. Not a bench scenario; valgrind's heap tools
// do not run shardproxy (io_uring).
//
//   gcc -O2 -shared -fPIC -o /tmp/liveheap.so bench/liveheap.c -ldl
//   LD_PRELOAD=/tmp/liveheap.so LIVEHEAP_OUT=/tmp/heap.txt target/release/shardproxy -c ... &
//   kill -USR2 $PID; (open and hold the connections); kill -USR2 $PID
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <malloc.h>

#define SLOTS (1u << 22)
static uintptr_t keys[SLOTS];
static size_t sizes[SLOTS];
static atomic_flag lock = ATOMIC_FLAG_INIT;
static void *(*real_malloc)(size_t);
static void (*real_free)(void *);
static void *(*real_realloc)(void *, size_t);
static void *(*real_calloc)(size_t, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static char boot[1 << 16]; static size_t boot_used;
static __thread int inside;

static void lk(void) { while (atomic_flag_test_and_set_explicit(&lock, memory_order_acquire)) ; }
static void ul(void) { atomic_flag_clear_explicit(&lock, memory_order_release); }
static uint32_t h(uintptr_t p) { return (uint32_t)((p >> 4) * 2654435761u) & (SLOTS - 1); }
static void put(void *p, size_t n) {
    if (!p) return; lk();
    uint32_t i = h((uintptr_t)p);
    while (keys[i] && keys[i] != 1 && keys[i] != (uintptr_t)p) i = (i + 1) & (SLOTS - 1);
    keys[i] = (uintptr_t)p; sizes[i] = n; ul();
}
static void del(void *p) {
    if (!p) return; lk();
    uint32_t i = h((uintptr_t)p);
    while (keys[i]) { if (keys[i] == (uintptr_t)p) { keys[i] = 1; sizes[i] = 0; break; } i = (i + 1) & (SLOTS - 1); }
    ul();
}
static void init(void) {
    if (real_malloc) return;
    real_malloc = dlsym(RTLD_NEXT, "malloc"); real_free = dlsym(RTLD_NEXT, "free");
    real_realloc = dlsym(RTLD_NEXT, "realloc"); real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign"); real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
}
static void dump(int sig) {
    (void)sig;
    const char *out = getenv("LIVEHEAP_OUT"); if (!out) out = "/tmp/liveheap.txt";
    // buckets: exact sizes aggregated via a small table
    static size_t bsz[65536]; static size_t bcnt[65536]; size_t nb = 0; size_t total = 0, count = 0;
    lk();
    for (uint32_t i = 0; i < SLOTS; i++) if (keys[i] > 1) {
        size_t s = sizes[i]; total += s; count++;
        size_t j; for (j = 0; j < nb; j++) if (bsz[j] == s) break;
        if (j == nb && nb < 65536) { bsz[nb] = s; bcnt[nb] = 0; nb++; }
        if (j < 65536) bcnt[j]++;
    }
    ul();
    FILE *f = fopen(out, "a"); if (!f) return;
    fprintf(f, "=== live: %zu allocations, %zu bytes\n", count, total);
    for (size_t k = 0; k < nb; k++) if (bcnt[k] * bsz[k] >= 65536) fprintf(f, "%zu x %zu = %zu\n", bcnt[k], bsz[k], bcnt[k] * bsz[k]);
    fclose(f);
}
__attribute__((constructor)) static void ctor(void) { init(); signal(SIGUSR2, dump); }
void *malloc(size_t n) {
    if (!real_malloc) { if (inside) { void *p = boot + boot_used; boot_used += (n + 15) & ~15ul; return p; } inside = 1; init(); inside = 0; }
    void *p = real_malloc(n); put(p, n); return p;
}
void free(void *p) {
    if ((char *)p >= boot && (char *)p < boot + sizeof boot) return;
    init(); del(p); real_free(p);
}
void *calloc(size_t a, size_t b) {
    if (!real_calloc) { void *p = boot + boot_used; boot_used += (a * b + 15) & ~15ul; memset(p, 0, a * b); return p; }
    void *p = real_calloc(a, b); put(p, a * b); return p;
}
void *realloc(void *q, size_t n) {
    init(); if ((char *)q >= boot && (char *)q < boot + sizeof boot) { void *p = malloc(n); memcpy(p, q, n); return p; }
    del(q); void *p = real_realloc(q, n); put(p, n); return p;
}
int posix_memalign(void **r, size_t a, size_t n) { init(); int e = real_posix_memalign(r, a, n); if (!e) put(*r, n); return e; }
void *aligned_alloc(size_t a, size_t n) { init(); void *p = real_aligned_alloc(a, n); put(p, n); return p; }
