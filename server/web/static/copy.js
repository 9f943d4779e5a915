// Copy buttons for the command blocks: progressive enhancement; without JavaScript the text is selectable.
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  var block = document.getElementById(button.getAttribute("data-copy"));
  if (!block || !navigator.clipboard) { return; }
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(block.innerText).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 2000);
    });
  });
});
