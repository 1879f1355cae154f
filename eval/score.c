#include "eval/score.h"

#include <stdio.h>
#include <string.h>

#define MAX_ITEMS 16
#define ITEM_LEN 64

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Reads up to MAX_ITEMS leading items of one class (digits or letters):
 * separated by white space and commas, and in word lists also by numbering
 * ("2.") and "and"; a "." after an item ends the list, and so does anything
 * else, so a list is what the answer starts with, not any item found later. */
static int read_items(const char *s, int (*in_item)(char), int words, char items[][ITEM_LEN]) {
    int n = 0;
    const char *p = s;
    while (n < MAX_ITEMS) {
        for (;;) {
            if (is_space(*p) || *p == ',') {
                p++;
            } else if (words && is_digit(*p)) {
                const char *q = p;
                while (is_digit(*q)) q++;
                if (*q != '.') break;
                p = q + 1;
            } else if (words && strncmp(p, "and", 3) == 0 && !is_letter(p[3])) {
                p += 3;
            } else {
                break;
            }
        }
        if (!in_item(*p)) break;
        int len = 0;
        for (; in_item(*p); p++)
            if (len < ITEM_LEN - 1) items[n][len++] = *p;
        items[n++][len] = '\0';
        if (*p == '.') break;
    }
    return n;
}

static void join(char items[][ITEM_LEN], int n, const char *sep, char *out, size_t len) {
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < n && used < len; i++) {
        int w = snprintf(out + used, len - used, "%s%s", i ? sep : "", items[i]);
        if (w < 0) break;
        used += (size_t)w;
    }
}

int eval_score(eval_answer_kind kind, const char *expected, const char *continuation, char *got, size_t got_len) {
    char want[MAX_ITEMS][ITEM_LEN], have[MAX_ITEMS][ITEM_LEN];
    int numbers = kind == EVAL_ANSWER_NUMBER || kind == EVAL_ANSWER_NUMBERS;
    int (*in_item)(char) = numbers ? is_digit : is_letter;
    int n_want = read_items(expected, in_item, !numbers, want);
    int n_have = read_items(continuation, in_item, !numbers, have);
    int single = kind == EVAL_ANSWER_NUMBER || kind == EVAL_ANSWER_WORD;
    /* as many items as expected are read: "71932, 12" answers 71932 */
    if (single && n_have > 1) n_have = 1;
    if (n_want > 0 && n_have > n_want) n_have = n_want;
    join(have, n_have, numbers ? ", " : kind == EVAL_ANSWER_WORDS ? " " : ", ", got, got_len);
    if (n_want == 0 || n_have < n_want) return 0;
    if (kind == EVAL_ANSWER_WORD_SET) {
        for (int i = 0; i < n_want; i++) {
            int found = 0;
            for (int j = 0; j < n_want && !found; j++) found = strcmp(want[i], have[j]) == 0;
            if (!found) return 0;
        }
        /* distinct expected words, all found among as many read: a permutation */
        return 1;
    }
    for (int i = 0; i < n_want; i++)
        if (strcmp(want[i], have[i]) != 0) return 0;
    return 1;
}
