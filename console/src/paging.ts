// Page tokens for previous / next: tokens[i] fetches page i (the first page has none).
import { computed, ref } from "vue";

export function usePages() {
  const tokens = ref<string[]>([""]);
  const index = ref(0);
  const next = ref("");
  return {
    token: computed(() => tokens.value[index.value] ?? ""),
    hasPrevious: computed(() => index.value > 0),
    hasNext: computed(() => next.value !== ""),
    seen(nextToken: string | undefined) {
      next.value = nextToken ?? "";
    },
    forward() {
      tokens.value[index.value + 1] = next.value;
      index.value += 1;
    },
    back() {
      index.value = Math.max(0, index.value - 1);
    },
    reset() {
      tokens.value = [""];
      index.value = 0;
    },
  };
}
