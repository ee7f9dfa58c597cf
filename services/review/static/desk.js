// Keyboard shortcuts of the review desk. No inline script anywhere (the CSP forbids it).
(function () {
  "use strict";
  function typing(event) {
    var t = event.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }
  function go(id) {
    var link = document.getElementById(id);
    if (link) { window.location.href = link.href; }
  }
  function click(id) {
    var button = document.getElementById(id);
    if (button && !button.disabled) { button.click(); }
  }
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr[data-href]"));
  var selected = -1;
  function select(i) {
    if (!rows.length) { return; }
    if (selected >= 0) { rows[selected].classList.remove("selected"); }
    selected = Math.max(0, Math.min(rows.length - 1, i));
    rows[selected].classList.add("selected");
    rows[selected].scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && typing(event)) { event.target.blur(); return; }
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) { return; }
    var onCard = document.body.classList.contains("card-page");
    switch (event.key) {
      case "j": if (onCard) { go("next"); } else { select(selected + 1); } break;
      case "k": if (onCard) { go("prev"); } else { select(selected - 1); } break;
      case "Enter": if (!onCard && selected >= 0) { window.location.href = rows[selected].dataset.href; } break;
      case "a": if (onCard) { click("approve"); } break;
      case "r":
        if (onCard) {
          var note = document.getElementById("note");
          if (note && note.value.trim()) { click("reject"); } else if (note) { note.focus(); }
        }
        break;
      case "e": if (onCard) { var name = document.getElementById("product_name"); if (name) { name.focus(); } } break;
      case "u": if (onCard) { go("back"); } break;
      case "/": var q = document.querySelector("input[name=q]"); if (q) { q.focus(); event.preventDefault(); } break;
      default: return;
    }
  });
})();
