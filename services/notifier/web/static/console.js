// Refresh the board in place, so the page keeps its scroll position and focus; and say so
// plainly when it cannot, for a board that silently stopped updating would look all clear.
(function () {
  var board = document.getElementById("board");
  if (!board || !window.fetch) return;
  var every = 1000 * Number(board.dataset.refreshSeconds || 30);
  var warning = document.createElement("p");
  warning.className = "why stale";
  warning.setAttribute("role", "alert");
  warning.hidden = true;
  board.parentNode.insertBefore(warning, board);
  function refresh() {
    fetch(board.dataset.source, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (!r.ok) throw new Error("the console answered " + r.status);
        return r.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("board");
        if (!fresh) throw new Error("you have been signed out");
        board.innerHTML = fresh.innerHTML;
        warning.hidden = true;
      })
      .catch(function (e) {
        var why = e instanceof TypeError ? "the console cannot be reached" : e.message;
        warning.textContent = "This board is not up to date: " + why + ". Reload the page.";
        warning.hidden = false;
      })
      .then(function () { setTimeout(refresh, every); });
  }
  setTimeout(refresh, every);
})();
