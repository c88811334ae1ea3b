/* Scratch memory on a cache-line boundary (free() releases it): malloc's 16-byte alignment made
 * every 64-byte vector load of the blocked buffers straddle two cache lines. NULL on failure. */
static void *aligned_scratch(size_t bytes) {
    void *p = NULL;
    return posix_memalign(&p, 64, bytes) == 0 ? p : NULL;
}

static int n_workers(int nthreads, int K) {
    int n = nthreads < K ? nthreads : K;
    return n < 1 ? 1 : n > MAXT ? MAXT : n;
}

/* Worker pool: run fn(args[i]) for i < n, i = 0 on the caller's thread and i >= 1 on pool threads
 * that are started once and then sleep on a condition variable between calls (after a short
 * spin, below, so a busy machine loses little to them; starting a thread per call costs more than
 * waking one). One call at a time uses the pool; a concurrent caller (another Python thread)
 * starts threads of its own for its call. A forked child starts with an empty pool (the parent's
 * threads do not exist there). A thread that cannot be started runs its share on the caller's. */
static pthread_mutex_t pool_job = PTHREAD_MUTEX_INITIALIZER;  /* held for a whole call */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER, pool_done = PTHREAD_COND_INITIALIZER;
static int pool_size = 0, pool_atfork = 0;
static unsigned long pool_gen = 0, pool_pending = 0;  /* written under pool_mu, also read atomically */
static void *(*pool_fn[MAXT])(void *);
static void *pool_arg[MAXT];
static unsigned long pool_born[MAXT];  /* the generation current when worker i started */

static void pool_child_reset(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pool_job = m; pool_mu = m; pool_wake = c; pool_done = c;
    pool_size = 0; pool_pending = 0;
}

/* Before sleeping, a waiting thread watches the flag for up to POOL_SPIN_NS: the next call of a
 * training update may come within that, and a futex wake-up costs tens of microseconds, more
 * where the idle core has to be woken by the hypervisor. Short, so that a waiting thread does not
 * hold a core another process could use. */
#define POOL_SPIN_NS 50000L
static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}
static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}
/* spin while *flag == value (equal = 1) or while *flag != value (equal = 0), at most POOL_SPIN_NS */
static void spin_while(const unsigned long *flag, unsigned long value, int equal) {
    const long end = now_ns() + POOL_SPIN_NS;
    for (int i = 0; (__atomic_load_n(flag, __ATOMIC_ACQUIRE) == value) == equal; ++i) {
        cpu_relax();
        if ((i & 63) == 63 && now_ns() > end) return;
    }
}

static void *pool_main(void *arg) {
    const int id = (int)(size_t)arg;
    pthread_mutex_lock(&pool_mu);
    unsigned long seen = pool_born[id];
    for (;;) {
        if (pool_gen == seen) {
            pthread_mutex_unlock(&pool_mu);
            spin_while(&pool_gen, seen, 1);
            pthread_mutex_lock(&pool_mu);
        }
        while (pool_gen == seen) pthread_cond_wait(&pool_wake, &pool_mu);
        seen = pool_gen;
        void *(*fn)(void *) = pool_fn[id];
        if (fn == NULL) continue;
        pool_fn[id] = NULL;
        pthread_mutex_unlock(&pool_mu);
        fn(pool_arg[id]);
        pthread_mutex_lock(&pool_mu);
        if (__atomic_sub_fetch(&pool_pending, 1, __ATOMIC_RELEASE) == 0) pthread_cond_signal(&pool_done);
    }
    return NULL;
}

static void run_on_new_threads(void *(*fn)(void *), void **args, int n) {
    pthread_t th[MAXT];
    int started[MAXT] = {0};
    for (int i = 1; i < n; ++i) started[i] = pthread_create(&th[i], NULL, fn, args[i]) == 0;
    fn(args[0]);
    for (int i = 1; i < n; ++i) {
        if (started[i]) pthread_join(th[i], NULL);
        else fn(args[i]);
    }
}

static void run_workers(void *(*fn)(void *), void **args, int n) {
    if (n <= 1) { fn(args[0]); return; }
    if (pthread_mutex_trylock(&pool_job) != 0) { run_on_new_threads(fn, args, n); return; }
    pthread_mutex_lock(&pool_mu);
    if (!pool_atfork) pool_atfork = pthread_atfork(NULL, NULL, pool_child_reset) == 0;
    while (pool_size < n - 1) {  /* worker ids 1 .. pool_size */
        pthread_t th;
        pool_born[pool_size + 1] = pool_gen;
        if (pthread_create(&th, NULL, pool_main, (void *)(size_t)(pool_size + 1)) != 0) break;
        pthread_detach(th);
        pool_size++;
    }
    const int m = n - 1 < pool_size ? n - 1 : pool_size;  /* shares handed to pool threads */
    for (int i = 1; i <= m; ++i) { pool_fn[i] = fn; pool_arg[i] = args[i]; }
    __atomic_store_n(&pool_pending, (unsigned long)m, __ATOMIC_RELEASE);
    __atomic_add_fetch(&pool_gen, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_mu);
    fn(args[0]);
    for (int i = m + 1; i < n; ++i) fn(args[i]);  /* threads that could not be started */
    spin_while(&pool_pending, 0, 0);
    pthread_mutex_lock(&pool_mu);
    while (pool_pending > 0) pthread_cond_wait(&pool_done, &pool_mu);
    pthread_mutex_unlock(&pool_mu);
    pthread_mutex_unlock(&pool_job);
}

/* Every kernel's job struct starts with this: the worker's failure code, and the call's shared
 * counter from which each worker takes its next model (next_model): models go to whichever thread
 * is free, so a worker that wakes late (a futex wake-up takes tens of microseconds) or a core that
 * is busy with another process takes fewer, instead of holding up the call with a fixed share.
 * Each model is computed by one thread alone, so the results do not depend on the split. */
typedef struct { int status; int *next; } job_head;
static int next_model(job_head *h) { return __atomic_fetch_add(h->next, 1, __ATOMIC_RELAXED); }

/* Run fn on n jobs of `size` bytes each (run_workers), return the largest status they set. */
static int run_jobs(void *(*fn)(void *), void *jobs, size_t size, int n) {
    void *args[MAXT];
    int next = 0;
    for (int i = 0; i < n; ++i) {
        args[i] = (char *)jobs + (size_t)i * size;
        ((job_head *)args[i])->next = &next;
    }
    run_workers(fn, args, n);
    int status = 0;
    for (int i = 0; i < n; ++i) {
        const int st = ((const job_head *)args[i])->status;
        status = st > status ? st : status;
    }
    return status;
}

