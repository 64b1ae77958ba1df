import vue from "@vitejs/plugin-vue";
import { defineConfig } from "vitest/config";

// `npm run dev` serves the console on Vite's port and forwards the API to a gateway (`make run`'s by
// default), so the page and the API share one origin as in production and no CORS is needed.
const gateway = process.env.GATEWAY_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [vue()],
  build: {
    // The gateway's Content-Security-Policy allows no inline script: never inline the module preload
    // polyfill or small assets as data: scripts.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    // Rolldown reports slow plugins on a slow machine: noise in `make run`'s output, not a problem.
    rolldownOptions: { checks: { bundlerTimings: false } },
  },
  server: { proxy: { "/api": gateway, "/openapi.json": gateway } },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
