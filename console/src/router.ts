// History-mode routes: the gateway answers any page path with index.html. None of them may start with a
// segment the API uses (`/api`, `/coupons`), or the gateway would answer with the API's 404.
import { createRouter, createWebHistory } from "vue-router";
import { isAdmin, session } from "./session";
import MyCoupons from "./views/MyCoupons.vue";
import SignIn from "./views/SignIn.vue";

export const router = createRouter({
  history: createWebHistory(),
  routes: [
    { path: "/", name: "coupons", component: MyCoupons, meta: { title: "My coupons" } },
    { path: "/sign-in", name: "sign-in", component: SignIn, meta: { title: "Sign in", open: true } },
    { path: "/books", name: "books", component: () => import("./views/Books.vue"), meta: { title: "Books", admin: true } },
    {
      path: "/books/:id",
      name: "book",
      component: () => import("./views/BookDetail.vue"),
      meta: { title: "Book", admin: true },
    },
    { path: "/pools", name: "pools", component: () => import("./views/Pools.vue"), meta: { title: "Pools", admin: true } },
    {
      path: "/pools/:id",
      name: "pool",
      component: () => import("./views/PoolDetail.vue"),
      meta: { title: "Pool", admin: true },
    },
    { path: "/users", name: "users", component: () => import("./views/Users.vue"), meta: { title: "Users", admin: true } },
    { path: "/events", name: "events", component: () => import("./views/Events.vue"), meta: { title: "Events", admin: true } },
    {
      path: "/webhooks",
      name: "webhooks",
      component: () => import("./views/Webhooks.vue"),
      meta: { title: "Webhooks", admin: true },
    },
    { path: "/:rest(.*)*", name: "missing", component: () => import("./views/NotFound.vue"), meta: { title: "Not found" } },
  ],
});

router.beforeEach((to) => {
  if (!to.meta.open && !session.user) return { name: "sign-in", query: { next: to.fullPath } };
  if (to.meta.admin && !isAdmin()) return { name: "coupons" };
  return true;
});

router.afterEach((to) => {
  document.title = `${String(to.meta.title ?? "")} · Coupon Book Console`;
});
