/* GGUF reader: qw_gguf_open_memory over the input, then every accessor a backend uses on what
 * it accepted (values, tensor data bounds, typed getters, the architecture's hyperparameters). */
#include "arch.h"
#include "fuzz_util.h"
#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

static void touch_value(const qw_gguf_value *v) {
    if (v->type == QW_GGUF_STRING && v->v.str.len) {
        sink ^= (uint8_t)(v->v.str.data[0] ^ v->v.str.data[v->v.str.len - 1]);
    } else if (v->type == QW_GGUF_ARRAY && v->v.arr.count) {
        uint64_t last = v->v.arr.count - 1;
        if (v->v.arr.elem_type == QW_GGUF_STRING) {
            for (uint64_t i = 0; i < v->v.arr.count; i++) {
                const qw_gguf_str *s = &v->v.arr.strs[i];
                if (s->len) sink ^= (uint8_t)(s->data[0] ^ s->data[s->len - 1]);
            }
        } else {
            size_t es = qw_gguf_type_size(v->v.arr.elem_type);
            const uint8_t *p = v->v.arr.data;
            sink ^= (uint8_t)(p[0] ^ p[last * es + es - 1]);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qw_gguf *g = NULL;
    qw_error err;
    if (qw_gguf_open_memory(data, size, "fuzz.gguf", &g, &err) != QW_OK) return 0;
    for (size_t i = 0; i < qw_gguf_kv_count(g); i++) {
        const qw_gguf_kv *kv = qw_gguf_kv_at(g, i);
        touch_value(&kv->value);
        uint64_t u;
        int64_t s;
        double f;
        bool b;
        (void)qw_gguf_get_u64(g, kv->key, &u);
        (void)qw_gguf_get_i64(g, kv->key, &s);
        (void)qw_gguf_get_f64(g, kv->key, &f);
        (void)qw_gguf_get_bool(g, kv->key, &b);
        qw_free(qw_gguf_get_string(g, kv->key));
        if (qw_gguf_find_kv(g, kv->key) == NULL) __builtin_trap(); /* a listed key is found */
    }
    for (size_t i = 0; i < qw_gguf_tensor_count(g); i++) {
        const qw_gguf_tensor *t = qw_gguf_tensor_at(g, i);
        if (t->bytes) sink ^= (uint8_t)(t->data[0] ^ t->data[t->bytes - 1]);
        if (qw_gguf_find_tensor(g, t->name) == NULL) __builtin_trap();
    }
    char *arch = qw_gguf_get_string(g, "general.architecture");
    if (arch) {
        qw_hparams hp;
        if (qw_hparams_from_gguf(g, arch, &hp, &err) == QW_OK) {
            (void)qw_hparams_rope_from_gguf(g, arch, &hp, &err);
        }
        qw_free(arch);
    }
    qw_gguf_close(g);
    return 0;
}
