/* See jscan.h. Strategy: one function skips a value of any kind (strings with their
 * escapes, nested objects and arrays by depth), so walking a container is: skip
 * whitespace, read a key, skip to the value, hand over its span, expect , or the end. */
#include "jscan.h"

#include <stdlib.h>
#include <string.h>

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The end of the string that opens at p (a quote), or NULL. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* The end of the value that starts at p, or NULL. */
static const char *skip_value(const char *p, const char *end)
{
    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = skip_string(p, end);
                if (p == NULL)
                    return NULL;
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if (*p == '}' || *p == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return NULL;
    }
    const char *start = p;
    while (p < end && !strchr(",}] \t\r\n", *p))
        p++;
    return p > start ? p : NULL;
}

static int scan(jspan text, char open, char close, bool keyed,
                int (*fn)(void *, jspan, jspan), void *ctx)
{
    const char *p = text.p, *end = text.p + text.n;
    p = skip_ws(p, end);
    if (p >= end || *p != open)
        return -1;
    p = skip_ws(p + 1, end);
    if (p < end && *p == close)
        return skip_ws(p + 1, end) == end ? 0 : -1;
    for (;;) {
        jspan key = {NULL, 0};
        if (keyed) {
            const char *key_end = p < end && *p == '"' ? skip_string(p, end) : NULL;
            if (key_end == NULL)
                return -1;
            key = (jspan){p + 1, (size_t)(key_end - p - 2)};
            p = skip_ws(key_end, end);
            if (p >= end || *p != ':')
                return -1;
            p = skip_ws(p + 1, end);
        }
        const char *value_end = skip_value(p, end);
        if (value_end == NULL)
            return -1;
        int stop = fn(ctx, key, (jspan){p, (size_t)(value_end - p)});
        if (stop)
            return stop;
        p = skip_ws(value_end, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == close)
            return skip_ws(p + 1, end) == end ? 0 : -1;
        return -1;
    }
}

int jscan_object(jspan text, int (*fn)(void *, jspan, jspan), void *ctx)
{
    return scan(text, '{', '}', true, fn, ctx);
}

struct item_ctx {
    int (*fn)(void *, jspan);
    void *ctx;
};

static int item_of(void *ctx, jspan key, jspan value)
{
    (void)key;
    struct item_ctx *items = ctx;
    return items->fn(items->ctx, value);
}

int jscan_array(jspan text, int (*fn)(void *, jspan), void *ctx)
{
    struct item_ctx items = {fn, ctx};
    return scan(text, '[', ']', false, item_of, &items);
}

bool jspan_is(jspan s, const char *literal)
{
    size_t n = strlen(literal);
    return s.n == n && memcmp(s.p, literal, n) == 0;
}

bool jnumber(jspan value, double *out)
{
    char buf[64];
    if (value.n == 0 || value.n >= sizeof buf || !strchr("-0123456789", value.p[0]))
        return false;
    memcpy(buf, value.p, value.n);
    buf[value.n] = '\0';
    char *end;
    *out = strtod(buf, &end);
    return *end == '\0';
}

bool jstring(jspan value, char *out, size_t cap)
{
    if (value.n < 2 || value.p[0] != '"' || value.n - 2 >= cap || memchr(value.p, '\\', value.n))
        return false;
    memcpy(out, value.p + 1, value.n - 2);
    out[value.n - 2] = '\0';
    return true;
}
