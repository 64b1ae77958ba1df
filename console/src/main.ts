import { createApp } from "vue";
import App from "./App.vue";
import { router } from "./router";
import { restore } from "./session";
import "./style.css";

void restore().then(() => createApp(App).use(router).mount("#app"));
