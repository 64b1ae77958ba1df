import { createApp } from "vue";
import App from "./App.vue";
import { router } from "./router";
import { refresh } from "./session";
import "./style.css";

// A refresh token from before a reload gets a new access token first; without one the person signs in.
void refresh().then(() => createApp(App).use(router).mount("#app"));
