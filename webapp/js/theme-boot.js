// Sets <html data-theme> before the first paint (a classic script in <head>, so the page
// never flashes light in dark mode): the choice remembered by theme.js (same key), else
// the system's prefers-color-scheme, followed live while the user has not chosen.
(function () {
  var root = document.documentElement;
  var media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  function chosen() {
    try {
      var t = localStorage.getItem("toru.theme");
      return t === "dark" || t === "light" ? t : null;
    } catch (e) {
      return null;
    }
  }
  function apply() {
    root.dataset.theme = chosen() || (media && media.matches ? "dark" : "light");
  }
  apply();
  if (media && media.addEventListener) media.addEventListener("change", apply);
})();
